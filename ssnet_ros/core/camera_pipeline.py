"""Frames of several cameras through one shared Segmenter, without ROS: what the node publishes.

A :class:`CameraPipeline` holds one camera's own state: its calibration and focal length (the
network input size the automatic rule picks for it), its pose, its cell-to-pixel grid lookup and
the drivable trust of its latest frame. :class:`Pipeline` takes a batch of validated frames (RGB
array, stamp, frame id, camera), runs each camera's frames through the shared model with that
camera's focal length for that call only (no camera's focal length drops another's CUDA graphs:
the graph key holds the network size) and returns, as arrays, every output the node publishes
and one drivable grid fused over the batch's cameras (the nearest camera wins a cell). The node
(:mod:`ssnet_ros.ros.node`), ``ssnet-eval-bag`` and the benchmark's core stage all run it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import SSNetError
from .ground_grid import Camera, GridLookup, GridSpec, calibration_problem, fuse_lookups, \
    grid_lookup, lookup_problem, mark_unknown, sample_grid
from .render import OUTPUT_KEYS, Rendered
from .segmenter import Segmenter
from .trust import TrustModel

NO_POSE = "no camera pose (see the log)"
"""The grid problem of a calibrated camera whose frame came without a pose."""


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

    @property
    def problem(self) -> str | None:
        """Why this calibration cannot place a grid (or give a focal length); None: usable."""
        return calibration_problem(self.k, self.width, self.height, self.d, self.model)


class CameraPipeline:
    """One camera's state: calibration, focal length, pose, grid lookup (made once per
    calibration, pose and image size) and the drivable trust of its latest frame."""

    def __init__(self, name: str = "", pose: Sequence[float] | None = None) -> None:
        self.name = name
        self.pose: tuple[float, ...] | None = tuple(float(v) for v in pose) if pose else None
        """The camera body frame's [x, y, z, roll, pitch, yaw] in the grid frame (or None)."""
        self.calibration: Calibration | None = None
        self.calibration_problem: str | None = None
        """Why the latest calibration is unusable (None: usable, or none yet)."""
        self.grid_problem: str | None = None
        """Why the latest frame gave no grid (pose, lookup, nothing seen); None: it did."""
        self.trust: float | None = None
        """Drivable trust of the latest frame (None: none yet, or no trust model)."""
        self.trust_reason = ""
        """Why the latest frame's trust is below the threshold (empty when it is not)."""
        self.low_trust = 0
        """Frames whose drivable trust was below the threshold."""
        self._lookup: tuple[tuple[object, ...], GridLookup] | None = None
        self._sizes: dict[tuple[int, int, int, float | None], tuple[int, int] | None] = {}

    @property
    def focal_px(self) -> float | None:
        """This camera's focal length (pixels) for the automatic input size; None: unknown."""
        return None if self.calibration is None else self.calibration.focal_px

    def set_calibration(self, calibration: Calibration | None) -> str | None:
        """Use this camera_info from now on (None: forget it); an unusable one counts as none
        (no focal length, no grid). Returns why it is unusable (None: it is usable)."""
        problem = calibration.problem if calibration is not None else None
        self.calibration = None if problem else calibration
        self.calibration_problem = problem
        return problem

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
        this camera at ``pose`` (default its own); None without calibration, without pose or
        when it sees no cell (:attr:`grid_problem` says why)."""
        pose = tuple(pose) if pose else self.pose
        info = self.calibration
        if info is None:
            self.grid_problem = None  # the calibration's own problem says it
            return None
        if pose is None:
            self.grid_problem = NO_POSE
            return None
        key = (info, size, pose, grid)
        if self._lookup is None or self._lookup[0] != key:
            try:
                camera = Camera(info.k, info.width, info.height, pose, info.d, info.model)
                self._lookup = (key, grid_lookup(camera, grid, size))
            except SSNetError as exc:  # said by grid_problem; the frames are still segmented
                self._lookup, self.grid_problem = None, str(exc)
                return None
        self.grid_problem = lookup_problem(self._lookup[1])
        return None if self.grid_problem else self._lookup[1]

    def note_trust(self, result: Rendered, model: TrustModel | None, threshold: float) -> None:
        """Keep the drivable trust of this camera's latest frame (``result`` from the
        Segmenter with trust) and, below ``threshold``, count it and say why."""
        if "drivable_trust" not in result or model is None:
            return
        self.trust = float(result["drivable_trust"])
        self.trust_reason = ""
        if self.trust < threshold:
            self.low_trust += 1
            self.trust_reason = model.reason(result["trust_features"])

    def distrusted(self, threshold: float) -> bool:
        """True when the latest frame's drivable trust is below ``threshold``."""
        return self.trust is not None and self.trust < threshold


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


@dataclass(frozen=True)
class TrustPolicy:
    """What the drivable trust does: computed (with a trust model), a frame below
    ``threshold`` is flagged, and with ``unknown_grid`` its grid cells are unknown."""

    enabled: bool = False
    threshold: float = 0.6
    unknown_grid: bool = False


@dataclass
class BatchOutputs:
    """What one batch gives: per frame the arrays the node publishes, and the fused grid."""

    outputs: list[Rendered]
    """Per frame, by key of :data:`ssnet_ros.core.render.OUTPUT_KEYS` asked for (and
    ``drivable_trust``, ``trust_features`` with trust)."""
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
            overlay_alpha: float = 0.5, grid: bool = False,
            trust: TrustPolicy = TrustPolicy()) -> BatchOutputs:
        """Segment ``frames`` (frames of cameras with one focal length in one call, so in one
        forward pass per image size) and draw ``outputs``; with ``grid`` also the drivable
        grid of the frames whose camera has a calibration and a pose; with ``trust`` (and a
        trust model) each frame's drivable trust, noted on its camera."""
        if grid and self.grid is None:
            raise SSNetError("this pipeline has no grid (give it a GridSpec)")
        wanted = set(outputs) | ({"drivable_mask"} if grid else set())
        model = self.segmenter.trust_model if trust.enabled else None
        results: list[Rendered] = [{} for _ in frames]
        groups: dict[float | None, list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.camera.focal_px, []).append(i)
        for focal, indices in groups.items():
            rendered = self.segmenter.render_batch(
                [frames[i].rgb for i in indices], wanted, overlay_alpha=overlay_alpha,
                trust=model is not None, focal_px=focal)
            for i, out in zip(indices, rendered):
                results[i] = out
        for frame, out in zip(frames, results):
            frame.camera.note_trust(out, model, trust.threshold)
        batch = BatchOutputs(results)
        if grid:
            batch.grid, batch.grid_stamp_ns, batch.grid_cameras = self.fuse_grid(
                frames, results, trust)
        return batch

    def fuse_grid(self, frames: Sequence[Frame], results: Sequence[Rendered],
                  trust: TrustPolicy = TrustPolicy()
                  ) -> tuple[np.ndarray | None, int, list[CameraPipeline]]:
        """One drivable grid of frames taken together (one per camera, e.g. a batch of the
        node's cameras, or one frame of a bag) from their ``results`` (with drivable_mask):
        (grid data or None, the newest stamp, the cameras whose masks made it). A camera
        without calibration, pose or sight of the grid gives none (its ``grid_problem``
        says why); with ``trust.unknown_grid`` a distrusted camera's cells are unknown."""
        assert self.grid is not None
        parts = [(f, lookup, r["drivable_mask"]) for f, r in zip(frames, results)
                 if (lookup := f.camera.lookup(self.grid, r["drivable_mask"].shape[:2],
                                               f.pose)) is not None]
        if not parts:
            return None, 0, []
        key = tuple(id(lookup) for _, lookup, _ in parts)
        if self._fused is None or self._fused[0] != key:
            lookups = [lookup for _, lookup, _ in parts]
            self._fused = (key, lookups[0] if len(lookups) == 1 else fuse_lookups(lookups))
        data = sample_grid(self._fused[1], *(mask for _, _, mask in parts))  # 255: drivable
        unknown = [i for i, (f, _, _) in enumerate(parts)
                   if trust.unknown_grid and f.camera.distrusted(trust.threshold)]
        return (mark_unknown(self._fused[1], data, unknown), max(f.stamp_ns for f, _, _ in parts),
                [f.camera for f, _, _ in parts])
