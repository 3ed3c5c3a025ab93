"""Frames of several cameras through one shared Segmenter, without ROS: what the node publishes.

A :class:`CameraPipeline` holds one camera's own state: its calibration and focal length (the
network input size the automatic rule picks for it), its pose and its cell-to-pixel grid lookup.
:class:`Pipeline` takes a batch of validated frames (RGB array, stamp, frame id, camera), runs
each camera's frames through the shared model with that camera's focal length for that call
only (no camera's focal length drops another's CUDA graphs: the graph key holds the network
size) and returns, as arrays, every output the node publishes and one drivable grid fused over
the batch's cameras (the nearest camera wins a cell).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import SSNetError
from .ground_grid import Camera, GridLookup, GridSpec, fuse_lookups, grid_lookup, sample_grid
from .render import OUTPUT_KEYS, Rendered
from .segmenter import Segmenter


@dataclass(frozen=True)
class Calibration:
    """A camera_info's pinhole model: K (3x3, row-major), image size, distortion."""

    k: tuple[float, ...]
    width: int
    height: int
    d: tuple[float, ...] = ()
    model: str = "plumb_bob"

    @property
    def focal_px(self) -> float | None:
        """K[0] (fx) in pixels when usable for the automatic input size, else None."""
        fx = float(self.k[0]) if len(self.k) == 9 else 0.0
        return fx if np.isfinite(fx) and fx > 0 and self.width > 0 and self.height > 0 \
            else None


class CameraPipeline:
    """One camera's state: calibration, focal length, pose and grid lookup (made once per
    calibration, pose and image size)."""

    def __init__(self, name: str = "", pose: Sequence[float] | None = None) -> None:
        self.name = name
        self.pose: tuple[float, ...] | None = tuple(float(v) for v in pose) if pose else None
        """The camera body frame's [x, y, z, roll, pitch, yaw] in the grid frame (or None)."""
        self.calibration: Calibration | None = None
        self._lookup: tuple[tuple[object, ...], GridLookup] | None = None
        self.grid_problem: str | None = None
        """Why the last lookup failed (an unusable calibration or pose); None: it did not."""
        self._sizes: dict[tuple[int, int, int, float | None], tuple[int, int] | None] = {}

    @property
    def focal_px(self) -> float | None:
        """This camera's focal length (pixels) for the automatic input size; None: unknown."""
        return None if self.calibration is None else self.calibration.focal_px

    def set_calibration(self, calibration: Calibration | None) -> None:
        """Use this camera_info from now on (None: forget it); an unusable one counts as
        none (no focal length, no grid)."""
        self.calibration = calibration if calibration and calibration.focal_px else None

    def network_size(self, segmenter: Segmenter, height: int, width: int
                     ) -> tuple[int, int] | None:
        """The network input size this camera's frames of this size get (None: their own)."""
        key = (id(segmenter), height, width, self.focal_px)
        if key not in self._sizes:
            self._sizes[key] = segmenter.network_size(height, width, self.focal_px)
        return self._sizes[key]

    def lookup(self, grid: GridSpec, size: tuple[int, int],
               pose: Sequence[float] | None = None) -> GridLookup | None:
        """The cell-to-pixel lookup of ``grid`` for images of ``size`` (height, width) from
        this camera at ``pose`` (default its own); None without calibration or pose."""
        pose = tuple(pose) if pose else self.pose
        info = self.calibration
        if info is None or pose is None:
            return None
        key = (info, size, pose, grid)
        if self._lookup is None or self._lookup[0] != key:
            try:
                camera = Camera(info.k, info.width, info.height, pose, info.d, info.model)
            except SSNetError as exc:  # said by grid_problem; the frames are still segmented
                self.grid_problem = str(exc)
                return None
            self._lookup = (key, grid_lookup(camera, grid, size))
            self.grid_problem = None
        return self._lookup[1]


@dataclass
class Frame:
    """A validated frame of one camera."""

    camera: CameraPipeline
    rgb: np.ndarray
    """HxWx3 uint8 RGB."""
    stamp_ns: int = 0
    frame_id: str = ""
    pose: tuple[float, ...] | None = None
    """The camera's pose at this frame's stamp (e.g. from TF); None: the camera's own."""


@dataclass
class BatchOutputs:
    """What one batch gives: per frame the arrays the node publishes, and the fused grid."""

    outputs: list[Rendered]
    """Per frame, by key of :data:`ssnet_ros.core.render.OUTPUT_KEYS` asked for."""
    grid: np.ndarray | None = None
    """OccupancyGrid data (grid height x width int8: 0 drivable, 100 not, -1 unknown)."""
    grid_stamp_ns: int = 0
    """The newest stamp of the frames in the grid."""
    grid_cameras: list[CameraPipeline] = field(default_factory=list)
    """The cameras whose masks made the grid."""


class Pipeline:
    """Several cameras sharing one Segmenter (one model, batched together)."""

    def __init__(self, segmenter: Segmenter, grid: GridSpec | None = None) -> None:
        self.segmenter = segmenter
        self.grid = grid
        self._fused: tuple[tuple[int, ...], GridLookup] | None = None

    def run(self, frames: Sequence[Frame], outputs: Collection[str] = OUTPUT_KEYS, *,
            overlay_alpha: float = 0.5, grid: bool = False) -> BatchOutputs:
        """Segment ``frames`` (frames of cameras with one focal length in one call, so in one
        forward pass per image size) and draw ``outputs``; with ``grid`` also the drivable
        grid of the frames whose camera has a calibration and a pose."""
        if grid and self.grid is None:
            raise SSNetError("this pipeline has no grid (give it a GridSpec)")
        wanted = set(outputs) | ({"drivable_mask"} if grid else set())
        results: list[Rendered] = [{} for _ in frames]
        groups: dict[float | None, list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.camera.focal_px, []).append(i)
        for focal, indices in groups.items():
            rendered = self.segmenter.render_batch(
                [frames[i].rgb for i in indices], wanted, overlay_alpha=overlay_alpha,
                focal_px=focal)
            for i, out in zip(indices, rendered):
                results[i] = out
        batch = BatchOutputs(results)
        if grid:
            self._grid(frames, results, batch)
        return batch

    def _grid(self, frames: Sequence[Frame], results: list[Rendered],
              batch: BatchOutputs) -> None:
        assert self.grid is not None
        parts = [(f, lookup, r["drivable_mask"]) for f, r in zip(frames, results)
                 if (lookup := f.camera.lookup(self.grid, r["drivable_mask"].shape[:2],
                                               f.pose)) is not None]
        if not parts:
            return
        key = tuple(id(lookup) for _, lookup, _ in parts)
        if self._fused is None or self._fused[0] != key:
            lookups = [lookup for _, lookup, _ in parts]
            self._fused = (key, lookups[0] if len(lookups) == 1 else fuse_lookups(lookups))
        batch.grid = sample_grid(self._fused[1], *(mask > 0 for _, _, mask in parts))
        batch.grid_stamp_ns = max(f.stamp_ns for f, _, _ in parts)
        batch.grid_cameras = [f.camera for f, _, _ in parts]
