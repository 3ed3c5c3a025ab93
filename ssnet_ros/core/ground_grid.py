"""Project a drivable mask onto the ground plane: a bird's-eye grid for planners.

Flat ground is the model: the grid frame's z = 0 plane is the road. Each grid cell's centre is
projected into the camera once per (calibration, extrinsics, grid) (:func:`grid_lookup`); each
frame then only samples the mask at those pixels (:func:`sample_grid`). Cell values follow
nav_msgs/OccupancyGrid: 0 drivable, 100 seen and not drivable, -1 unknown (outside the image,
above the horizon, behind the camera, or farther than the image resolves, see
:data:`MAX_ROW_FOOTPRINT_M`). Where the ground is not flat (slopes, kerbs) or a pixel shows an
object rather than the ground (a car's roof), the projected cell is wrong: those pixels are
mapped to where the ray meets z = 0.

Frames (REP 103): the camera *body* frame has x along the optical axis, y left, z up; the
*optical* frame (which K applies to) has z along the axis, x right, y down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SSNetError

UNKNOWN, FREE, OCCUPIED = -1, 0, 100
MAX_ROW_FOOTPRINT_M = 0.5
"""A cell is unknown where one image row spans more than this much ground along the ray
(about d^2 / (fy * height) at distance d): at KITTI's resolution (fy 721.5, camera 1.65 m up)
that is about 24 m ahead; a level camera 1.65 m up sees the road from 5.95 m (its bottom row),
so KITTI's grid covers about 6-24 m ahead."""
#: rotation taking optical-frame vectors to the camera body frame (columns: optical x, y, z)
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "")
#: coefficients D holds for each distortion model (an empty D: no distortion, any model)
DISTORTION_LENGTHS = {"plumb_bob": (5,), "rational_polynomial": (8,), "": (0, 5, 8)}
MAX_DISTORTION = 1000.0
"""Largest |coefficient| of D taken as a calibration (real ones are below 100)."""
MAX_CAMERA_SIDE = 16384
FOLD_SHARE = 0.5
"""D is refused when its radial distortion folds back within this share of the image's
corner radius (from the principal point)."""
ASPECT_TOLERANCE = 0.02
"""Relative difference of aspect ratio up to which camera_info's size is scaled to the image's
(binning, resizing); beyond it the calibration is for another camera or crop."""
MAX_GRID_BYTES = 512 * 1024 * 1024
"""Most memory projecting one grid may take (:data:`GRID_BYTES_PER_CELL` per cell)."""
GRID_BYTES_PER_CELL = 200
"""Peak bytes per cell of :func:`grid_lookup` (cell centres, optical points, pixels, index
and distance as float64/int64 arrays: 162 B/cell measured at 2000x2000 cells)."""


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def _distort_radius(d: Sequence[float], r: np.ndarray) -> np.ndarray:
    """Distorted radius of undistorted normalised radii ``r`` (radial terms of D)."""
    c = list(d) + [0.0] * (8 - len(d))
    r2 = r * r
    with np.errstate(all="ignore"):
        return r * (1 + c[0] * r2 + c[1] * r2 ** 2 + c[4] * r2 ** 3) / (
            1 + c[5] * r2 + c[6] * r2 ** 2 + c[7] * r2 ** 3)


def fold_radius(d: Sequence[float]) -> float:
    """The undistorted normalised radius up to which D's radial distortion keeps growing (one
    ray, one pixel); inf without distortion. Beyond it rays fold back into the image, so
    cells there are unknown, never a pixel the ray does not see."""
    if not any(d):
        return math.inf
    r = np.linspace(0.0, 20.0, 20001)
    rd = _distort_radius(d, r)
    bad = ~np.isfinite(rd[1:]) | (np.diff(rd) <= 0)
    return float(r[np.argmax(bad)]) if bad.any() else math.inf


def calibration_problem(k: Sequence[float], width: int, height: int, d: Sequence[float] = (),
                        distortion_model: str = "plumb_bob") -> str | None:
    """Why intrinsics (camera_info K, size, D and its model) cannot place a grid on an image,
    or None when they can."""
    if len(k) != 9 or not _finite(k):
        return "K must be 9 finite numbers"
    if not (k[0] > 0 and k[4] > 0):
        return f"K has fx {k[0]:g} and fy {k[4]:g}; both must be positive"
    if (k[6], k[7], k[8]) != (0.0, 0.0, 1.0):
        return f"K's last row is {list(k[6:])}, not [0, 0, 1]"
    if not (1 <= width <= MAX_CAMERA_SIDE and 1 <= height <= MAX_CAMERA_SIDE):
        return f"camera size {width}x{height} is outside 1..{MAX_CAMERA_SIDE} pixels per side"
    if distortion_model not in DISTORTION_LENGTHS:
        if any(d):
            return (f"distortion model {distortion_model[:40]!r} is not one of plumb_bob, "
                    f"rational_polynomial")
    elif len(d) not in (0, *DISTORTION_LENGTHS[distortion_model]):
        need = " or ".join(str(n) for n in DISTORTION_LENGTHS[distortion_model] if n)
        return (f"D has {len(d)} coefficients; {distortion_model or 'no model'} takes {need}")
    if not _finite(d):
        return "D holds NaN or inf"
    if any(abs(v) > MAX_DISTORTION for v in d):
        return f"D has a coefficient beyond +-{MAX_DISTORTION:g}, not a calibration"
    if any(d):
        corners = [((u - k[2]) / k[0], (v - k[5]) / k[4]) for u in (0, width) for v in (0, height)]
        reach = max(math.hypot(x, y) for x, y in corners)
        fold = fold_radius(tuple(d))
        # real lenses may fold just inside the corners (KITTI's D at 0.91 of the corner
        # radius: those pixels are left unknown); folding within half of it is no lens
        if math.isfinite(fold) and float(_distort_radius(d, np.array([fold]))[0]) < \
                FOLD_SHARE * reach:
            return (f"D folds the image over itself within {FOLD_SHARE:.0%} of its radius "
                    f"(rays map to pixels of other rays): not a lens calibration")
    return None


def pose_problem(pose: Sequence[float]) -> str | None:
    """Why a camera pose ``[x, y, z, roll, pitch, yaw]`` cannot look at the ground, or None."""
    if len(pose) != 6 or not _finite(pose):
        return "camera_pose must be 6 finite numbers [x, y, z, roll, pitch, yaw]"
    if pose[2] <= 0:
        return (f"camera_pose z is {pose[2]:g} m: the camera must be above the ground "
                f"(the grid frame's z = 0 plane)")
    return None


GRID_FRAME = "base_link"
"""The default frame of the drivable grid (the node's grid_frame, ssnet-eval-bag's
--grid-frame); its z = 0 plane is the ground."""


@dataclass(frozen=True)
class GridSpec:
    """Cells of ``resolution`` metres over ``x_range`` x ``y_range`` of the grid frame."""

    resolution: float = 0.1
    x_range: tuple[float, float] = (0.0, 40.0)
    y_range: tuple[float, float] = (-20.0, 20.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.resolution) and self.resolution > 0):
            raise SSNetError(f"grid resolution {self.resolution} must be a positive number")
        for name, (lo, hi) in (("x", self.x_range), ("y", self.y_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise SSNetError(f"grid {name} range [{lo}, {hi}] must be [min, max], min < max")
        cells = self.width * self.height
        if cells * GRID_BYTES_PER_CELL > MAX_GRID_BYTES:
            coarsest = math.sqrt((self.x_range[1] - self.x_range[0]) *
                                 (self.y_range[1] - self.y_range[0]) * GRID_BYTES_PER_CELL /
                                 MAX_GRID_BYTES)
            raise SSNetError(
                f"grid of {self.width}x{self.height} cells at resolution {self.resolution:g} m "
                f"needs about {cells * GRID_BYTES_PER_CELL / 1e6:.0f} MB to project, more than "
                f"the limit of {MAX_GRID_BYTES / 1e6:.0f} MB; use a resolution of at least "
                f"{math.ceil(coarsest * 1000) / 1000:g} m or smaller ranges")

    @property
    def width(self) -> int:
        """Cells along x (OccupancyGrid width)."""
        return max(1, round((self.x_range[1] - self.x_range[0]) / self.resolution))

    @property
    def height(self) -> int:
        """Cells along y (OccupancyGrid height)."""
        return max(1, round((self.y_range[1] - self.y_range[0]) / self.resolution))

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """x and y (height x width) of every cell centre; cell (col, row) covers
        x = x_min + col * res, y = y_min + row * res."""
        xs = self.x_range[0] + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_range[0] + (np.arange(self.height) + 0.5) * self.resolution
        return np.meshgrid(xs, ys)


@dataclass(frozen=True)
class Camera:
    """Intrinsics (K, distortion D, the image size they are for) and the camera body frame's
    pose ``[x, y, z, roll, pitch, yaw]`` (metres, radians) in the grid frame."""

    k: tuple[float, ...]
    width: int
    height: int
    pose: tuple[float, float, float, float, float, float]
    d: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        problem = calibration_problem(self.k, self.width, self.height, self.d,
                                      self.distortion_model) or pose_problem(self.pose)
        if problem:
            raise SSNetError(problem)

    def scaled(self, height: int, width: int) -> Camera:
        """The same camera for an image resized to ``height`` x ``width``."""
        sx, sy = width / self.width, height / self.height
        k = list(self.k)
        k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
        return Camera(tuple(k), width, height, self.pose, self.d, self.distortion_model)

    def rotation(self) -> np.ndarray:
        """Grid-from-body rotation (roll about x, then pitch about y, then yaw about z)."""
        _, _, _, roll, pitch, yaw = self.pose
        cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch),
                                  math.sin(pitch), math.cos(yaw), math.sin(yaw))
        rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        return rz @ ry @ rx


def pose_from_optical(translation: Sequence[float], quaternion: Sequence[float]
                      ) -> tuple[float, float, float, float, float, float]:
    """The camera body frame's ``[x, y, z, roll, pitch, yaw]`` from the transform of its
    *optical* frame (an image's frame_id, REP 103) in the grid frame: ``translation`` (x, y, z)
    and ``quaternion`` (x, y, z, w), as TF gives them."""
    qx, qy, qz, qw = (float(v) for v in quaternion)
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not (math.isfinite(norm) and norm > 1e-9) or not all(
            math.isfinite(float(v)) for v in translation):
        raise SSNetError("the camera transform is not a finite translation and rotation")
    qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    r_grid_optical = np.array([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)]])
    r = r_grid_optical @ BODY_FROM_OPTICAL.T
    pitch = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    roll, yaw = math.atan2(r[2, 1], r[2, 2]), math.atan2(r[1, 0], r[0, 0])
    x, y, z = (float(v) for v in translation)
    return (x, y, z, roll, pitch, yaw)


def to_optical(camera: Camera, points: np.ndarray) -> np.ndarray:
    """Grid-frame points (N, 3) in the camera's optical frame (N, 3)."""
    r_grid_optical = camera.rotation() @ BODY_FROM_OPTICAL
    return (points - np.asarray(camera.pose[:3])) @ r_grid_optical


def project(camera: Camera, optical: np.ndarray) -> np.ndarray:
    """Pixel (u, v) of optical-frame points in front of the camera (N, 2), distortion
    applied as OpenCV does (plumb_bob: k1 k2 p1 p2 k3; rational_polynomial: 8 coefficients)."""
    z = optical[:, 2:3]
    xy = optical[:, :2] / z
    if any(camera.d):
        d = list(camera.d) + [0.0] * (8 - len(camera.d))
        k1, k2, p1, p2, k3, k4, k5, k6 = d[:8]
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        radial = (1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3) / (
            1 + k4 * r2 + k5 * r2 ** 2 + k6 * r2 ** 3)
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        xy = np.stack([xd, yd], axis=1)
    k = camera.k
    return np.stack([k[0] * xy[:, 0] + k[1] * xy[:, 1] + k[2], k[4] * xy[:, 1] + k[5]], axis=1)


@dataclass(frozen=True)
class GridLookup:
    """Pixel of every cell centre: flat indices into the concatenated, flattened masks of
    images of ``sizes`` (one size per camera; -1: unknown), and each cell's ground distance
    from the camera that sees it (inf where unknown)."""

    index: np.ndarray
    """(grid height, grid width) int64, -1 where unknown."""
    sizes: tuple[tuple[int, int], ...]
    distance: np.ndarray
    """(grid height, grid width) float64 metres on the ground, inf where unknown."""
    _on_device: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """The image size of a single camera's lookup (height, width)."""
        if len(self.sizes) != 1:
            raise SSNetError(f"a fused lookup of {len(self.sizes)} cameras has no single size")
        return self.sizes[0]

    def device_index(self, device: Any) -> Any:
        """The index as a torch tensor on ``device`` (copied once per device)."""
        import torch

        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = torch.from_numpy(self.index).to(device)
        return self._on_device[key]


def grid_lookup(camera: Camera, grid: GridSpec, image_size: tuple[int, int] | None = None
                ) -> GridLookup:
    """Where each cell centre of ``grid`` (on z = 0) appears in an image of ``image_size``
    (height, width; default the camera's own size)."""
    h, w = image_size or (camera.height, camera.width)
    if abs((w / h) / (camera.width / camera.height) - 1) > ASPECT_TOLERANCE:
        raise SSNetError(f"the calibration is for {camera.width}x{camera.height} images but the "
                         f"images are {w}x{h} (another aspect ratio: another camera or crop)")
    cam = camera.scaled(h, w) if (h, w) != (camera.height, camera.width) else camera
    xs, ys = grid.centres()
    points = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
    optical = to_optical(cam, points)
    ahead = optical[:, 2] > 1e-3
    index = np.full(xs.size, -1, np.int64)
    distance = np.full(xs.size, np.inf)
    fold = fold_radius(cam.d)
    if math.isfinite(fold):  # beyond the fold a ray's pixel is another ray's: unknown
        ahead &= np.hypot(*(optical[:, :2] / np.maximum(optical[:, 2:3], 1e-3)).T) < fold
    if ahead.any():
        uv = project(cam, optical[ahead])
        u, v = np.floor(uv[:, 0]), np.floor(uv[:, 1])
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        # ground resolution: one image row spans about d^2 / (fy * height) metres
        height = abs(float(cam.pose[2]))
        dist = np.linalg.norm(points[ahead, :2] - np.asarray(cam.pose[:2]), axis=1)
        resolved = dist ** 2 <= MAX_ROW_FOOTPRINT_M * cam.k[4] * max(height, 1e-6)
        ok = inside & resolved
        flat = np.where(ok, v * w + u, -1).astype(np.int64)
        index[np.flatnonzero(ahead)] = flat
        distance[np.flatnonzero(ahead)] = np.where(ok, dist, np.inf)
    shape = (grid.height, grid.width)
    return GridLookup(index.reshape(shape), ((h, w),), distance.reshape(shape))


def fuse_lookups(lookups: Sequence[GridLookup]) -> GridLookup:
    """One lookup for several cameras' masks (concatenated in this order): each cell takes
    the nearest camera (ground distance) that sees it; unknown only where none does."""
    if not lookups:
        raise SSNetError("fusing a drivable grid needs at least one camera")
    shapes = {lk.index.shape for lk in lookups}
    if len(shapes) != 1:
        raise SSNetError(f"cannot fuse lookups of different grids: {sorted(shapes)}")
    distance = np.stack([lk.distance for lk in lookups])
    nearest = distance.argmin(axis=0)
    offsets, total, sizes = [], 0, []
    for lk in lookups:
        offsets.append(total)
        for h, w in lk.sizes:
            total += h * w
            sizes.append((h, w))
    index = np.stack([np.where(lk.index >= 0, lk.index + off, -1)
                      for lk, off in zip(lookups, offsets)])
    fused = np.take_along_axis(index, nearest[None], 0)[0]
    best = np.take_along_axis(distance, nearest[None], 0)[0]
    return GridLookup(fused, tuple(sizes), best)


def sample_grid(lookup: GridLookup, *masks: Any) -> Any:
    """OccupancyGrid data (grid height x width int8): 0 drivable, 100 not, -1 unknown, from
    one mask (nonzero = drivable) per camera of ``lookup``. numpy masks give a numpy grid;
    torch masks (e.g. on the GPU, where the labels are) give a torch grid on their device."""
    if len(masks) != len(lookup.sizes):
        raise SSNetError(f"the lookup is for {len(lookup.sizes)} cameras, got {len(masks)} "
                         f"masks")
    for mask, (h, w) in zip(masks, lookup.sizes):
        if tuple(mask.shape) != (h, w):
            raise SSNetError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the lookup is "
                             f"for {h}x{w} images")
    if isinstance(masks[0], np.ndarray):
        flat = np.concatenate([np.asarray(m).reshape(-1) for m in masks])
        known = lookup.index >= 0
        out = np.full(lookup.index.shape, UNKNOWN, np.int8)
        out[known] = np.where(flat[lookup.index[known]], FREE, OCCUPIED)
        return out
    import torch

    flat = torch.cat([m.reshape(-1) for m in masks])
    index = lookup.device_index(flat.device)
    seen = flat[index.clamp(min=0)] != 0
    free = torch.where(seen, FREE, OCCUPIED).to(torch.int8)
    return torch.where(index >= 0, free, torch.full_like(free, UNKNOWN))


def mark_unknown(lookup: GridLookup, grid: np.ndarray, cameras: Sequence[int]) -> np.ndarray:
    """``grid`` (from :func:`sample_grid`, numpy) with every cell that cameras ``cameras``
    (indices into the lookup's cameras) decided set to -1 unknown, e.g. for frames whose
    drivable mask is not to be trusted."""
    if not cameras:
        return grid
    ends = np.cumsum([h * w for h, w in lookup.sizes])
    owner = np.searchsorted(ends, lookup.index, side="right")
    out = grid.copy()
    out[(lookup.index >= 0) & np.isin(owner, list(cameras))] = UNKNOWN
    return out


def kitti_camera(width: int = 1242, height: int = 375) -> Camera:
    """KITTI's left colour camera (published calibration: fx = fy = 721.5377, cx = 609.5593,
    cy = 172.854 at 1242x375), level, 1.65 m above the road, at the grid origin."""
    return Camera((721.5377, 0.0, 609.5593, 0.0, 721.5377, 172.854, 0.0, 0.0, 1.0),
                  1242, 375, (0.0, 0.0, 1.65, 0.0, 0.0, 0.0)).scaled(height, width)


def lookup_problem(lookup: GridLookup) -> str | None:
    """Why a lookup gives no grid worth publishing (it sees no cell), or None."""
    if not (lookup.index >= 0).any():
        return ("the camera sees no cell of the grid (check camera_pose, the grid ranges and "
                "camera_info)")
    return None


__all__: Sequence[str] = ("Camera", "GridLookup", "GridSpec", "calibration_problem",
                          "fold_radius", "lookup_problem", "pose_problem",
                          "fuse_lookups", "grid_lookup", "grid_picture", "kitti_camera",
                          "mark_unknown", "pose_from_optical", "resolved_range", "sample_grid",
                          "FREE", "OCCUPIED", "UNKNOWN")


GRID_COLOURS = {FREE: (0, 200, 80), OCCUPIED: (200, 60, 60), UNKNOWN: (40, 40, 40)}


def resolved_range(camera: Camera) -> float:
    """Ground distance (m) beyond which cells stay unknown for ``camera`` on flat ground: one
    image row spans more than :data:`MAX_ROW_FOOTPRINT_M` there (about 24 m for KITTI)."""
    return math.sqrt(MAX_ROW_FOOTPRINT_M * camera.k[4] * max(abs(float(camera.pose[2])), 1e-6))


GRID_LEGEND = ((FREE, "drivable (0)"), (OCCUPIED, "not drivable (100)"),
               (UNKNOWN, "unknown (-1)"))


def grid_picture(data: np.ndarray, grid: GridSpec, cell_px: int = 2, title: str = "",
                 note: str = "") -> np.ndarray:
    """An RGB bird's-eye picture of OccupancyGrid ``data``: forward (x) up, left (y) left,
    drivable green, not drivable red, unknown dark grey, the grid origin (the car) as a white
    triangle, a line every 5 m labelled every 10 m; above it ``title``, below it the colour
    legend, a metric scale bar and ``note`` (e.g. why the fan ends where it does)."""
    import cv2

    rgb = np.zeros((*data.shape, 3), np.uint8)
    for value, colour in GRID_COLOURS.items():
        rgb[data == value] = colour
    pic = np.ascontiguousarray(rgb.transpose(1, 0, 2)[::-1, ::-1])  # rows: x down->up
    pic = cv2.resize(pic, (pic.shape[1] * cell_px, pic.shape[0] * cell_px),
                     interpolation=cv2.INTER_NEAREST)
    h, w = pic.shape[:2]
    px = cell_px / grid.resolution  # pixels per metre
    font, aa = cv2.FONT_HERSHEY_SIMPLEX, cv2.LINE_AA

    def at(x: float, y: float) -> tuple[int, int]:
        return (round((grid.y_range[1] - y) * px), round(h - (x - grid.x_range[0]) * px))

    for x in np.arange(math.ceil(grid.x_range[0] / 5) * 5, grid.x_range[1], 5.0):
        cv2.line(pic, at(x, grid.y_range[0]), at(x, grid.y_range[1]), (90, 90, 90), 1)
        if x % 10 == 0 and x > grid.x_range[0]:
            u, v = at(x, grid.y_range[1])
            cv2.putText(pic, f"{x:g} m", (u + 3, v - 3), font, 0.4, (230, 230, 230), 1, aa)
    car = np.array([at(1.0, 0.0), at(-1.0, 0.8), at(-1.0, -0.8)], np.int32)
    cv2.fillConvexPoly(pic, car, (255, 255, 255))

    def strip(lines: int) -> np.ndarray:
        return np.full((18 * lines + 6, w, 3), 255, np.uint8)

    head = strip(1)
    cv2.putText(head, title or "drivable grid (bird's-eye, forward up)", (4, 16), font, 0.45,
                (0, 0, 0), 1, aa)
    foot = strip(2 + bool(note))
    x0 = 4
    for value, name in GRID_LEGEND:
        cv2.rectangle(foot, (x0, 5), (x0 + 12, 17), GRID_COLOURS[value], -1)
        cv2.putText(foot, name, (x0 + 16, 16), font, 0.4, (0, 0, 0), 1, aa)
        x0 += 22 + cv2.getTextSize(name, font, 0.4, 1)[0][0]
    bar_m = next((m for m in (10.0, 5.0, 2.0, 1.0, 0.5) if m * px <= w / 3), 0.5)
    bar = max(1, round(bar_m * px))
    cv2.rectangle(foot, (4, 25), (4 + bar, 31), (0, 0, 0), -1)
    cv2.putText(foot, f"{bar_m:g} m  (cell {grid.resolution:g} m)", (bar + 10, 34), font,
                0.4, (0, 0, 0), 1, aa)
    if note:
        cv2.putText(foot, note, (4, 52), font, 0.4, (0, 0, 0), 1, aa)
    return np.ascontiguousarray(np.vstack([head, pic, foot]))
