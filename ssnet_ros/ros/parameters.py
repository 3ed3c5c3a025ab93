"""The node's parameters: each declared with a descriptor (type, range, documentation), its
default (config/ssnet.yaml and the table in docs/node.md hold the same; test/test_docs.py
checks all three), and validated together into :class:`Settings` before the node starts or
takes a change."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from ..core.decode import TRANSPORTS as INPUT_TRANSPORTS
from ..core.decode import transport as input_transport
from ..core.drivable import DEFAULT_CONNECTED, DEFAULT_FLOOR, DrivableRule, check_classes
from ..core.ground_grid import GRID_FRAME, GridSpec, pose_problem
from ..core.input_size import input_size_problem
from ..core.render import OUTPUT_TOPICS
from ..core.segmenter import PRECISIONS, Segmenter, resolve_device, resolve_precision
from ..errors import SSNetError

TRANSPORTS = tuple(INPUT_TRANSPORTS)
"""The input_transport values: one entry each in :data:`ssnet_ros.core.decode.TRANSPORTS`."""
#: Output topics (relative to the node's namespace) keyed by their publish_* switch.
OUTPUTS = dict(OUTPUT_TOPICS)
#: Per-frame drivable trust (sensor_msgs/RelativeHumidity: a stamped 0..1 value).
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class ParamSpec:
    """One user-settable parameter: default, type, documentation and constraints."""

    name: str
    default: Any
    type: Parameter.Type
    description: str
    dynamic: bool = False
    """True when it may be changed while the node runs (else read-only)."""
    range: tuple[float, float] | None = None
    constraints: str = ""

    def descriptor(self, startup_writable: bool = False) -> ParameterDescriptor:
        """The ParameterDescriptor the node declares; a startup parameter is read-only unless
        ``startup_writable`` (the lifecycle node takes changes while unconfigured)."""
        d = ParameterDescriptor(name=self.name, type=self.type.value,
                                description=self.description,
                                additional_constraints=self.constraints,
                                read_only=not (self.dynamic or startup_writable))
        if self.range is not None and self.type == Parameter.Type.INTEGER:
            d.integer_range = [IntegerRange(from_value=int(self.range[0]),
                                            to_value=int(self.range[1]), step=1)]
        elif self.range is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(self.range[0]),
                                                         to_value=float(self.range[1]), step=0.0)]
        return d


_T = Parameter.Type
_GRID = GridSpec()  # the grid's defaults are GridSpec's (ssnet-eval-bag's too)
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("weights", "", _T.STRING,
              "Checkpoint file (.pt) written by ssnet-train, or the name of one shipped with "
              "the package (ssnet_camvid, fcn8s_camvid); empty uses ssnet_camvid."),
    ParamSpec("device", "auto", _T.STRING,
              "Inference device: auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
              constraints="auto | cpu | cuda | cuda:N"),
    ParamSpec("precision", "auto", _T.STRING,
              "Inference precision: auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16 (CUDA "
              "only) or bf16.", constraints=" | ".join(PRECISIONS)),
    ParamSpec("input_height", 0, _T.INTEGER,
              "Network input height in pixels: images are resized to input_height x "
              "input_width for inference and the results resized back; 0 (with input_width "
              "0) picks the size automatically so the world appears at the scale the model "
              "was trained for (the model card's rule, from the image size and the "
              "camera_info focal length).", range=(0, 16384),
              constraints="0 or >= 1 together with input_width"),
    ParamSpec("input_width", 0, _T.INTEGER,
              "Network input width in pixels; 0 (with input_height 0) picks the size "
              "automatically (see input_height).", range=(0, 16384),
              constraints="0 or >= 1 together with input_height"),
    ParamSpec("drivable_classes", [], _T.STRING_ARRAY,
              "Class names counted as drivable in segmentation/drivable_mask; empty uses the "
              "checkpoint's list.", constraints="names from the class_names parameter"),
    ParamSpec("drivable_floor", DEFAULT_FLOOR, _T.DOUBLE,
              "Confidence floor of the drivable decision: a pixel labelled with a drivable "
              "class whose softmax probability is below it is not drivable, in "
              "segmentation/drivable_mask and in the labels alike (it takes its most likely "
              "non-drivable class); 0 = off. Measured default: docs/drivable.md.",
              dynamic=True, range=(0.0, 1.0)),
    ParamSpec("drivable_connected", DEFAULT_CONNECTED, _T.BOOL,
              "Keep only the drivable area connected to the road in front of the vehicle "
              "(the components of the mask reaching the bottom centre of the image); the "
              "rest takes its most likely non-drivable class in the labels too. Measured "
              "default: docs/drivable.md.", dynamic=True),
    ParamSpec("input_transport", "raw", _T.STRING,
              "; ".join(f"{t.name} subscribes to image{t.topic_suffix} "
                        f"({t.msgtype.replace('/msg/', '/')})"
                        for t in INPUT_TRANSPORTS.values()) + ".",
              constraints=" | ".join(TRANSPORTS)),
    ParamSpec("overlay_alpha", 0.5, _T.DOUBLE,
              "Weight of the class colours in segmentation/overlay (0 = camera image only, "
              "1 = colours only).", dynamic=True, range=(0.0, 1.0)),
    *(ParamSpec(f"publish_{key}", True, _T.BOOL,
                f"Publish {topic}; it is computed only while someone subscribes to it.",
                dynamic=True) for key, topic in OUTPUTS.items()),
    ParamSpec("diagnostics_period", 1.0, _T.DOUBLE,
              "Seconds between messages on /diagnostics.", range=(0.1, 60.0)),
    ParamSpec("cameras", [], _T.STRING_ARRAY,
              "Cameras served by this node: camera NAME reads NAME/image (or "
              "NAME/image/compressed) and publishes NAME/segmentation/*; frames that arrive "
              "together are segmented in one batch. Empty: one camera on image, outputs "
              "segmentation/*.", constraints="unique names like front or rear_left"),
    ParamSpec("grid_frame", GRID_FRAME, _T.STRING,
              "frame_id of segmentation/drivable_grid, the frame camera_pose is given in; its "
              "z = 0 plane is the ground."),
    ParamSpec("grid_resolution", _GRID.resolution, _T.DOUBLE,
              "Metres per cell of segmentation/drivable_grid.", range=(0.01, 10.0)),
    ParamSpec("grid_x_range", list(_GRID.x_range), _T.DOUBLE_ARRAY,
              "[min, max] metres along grid_frame's x covered by the grid.",
              constraints="two numbers, min < max"),
    ParamSpec("grid_y_range", list(_GRID.y_range), _T.DOUBLE_ARRAY,
              "[min, max] metres along grid_frame's y covered by the grid.",
              constraints="two numbers, min < max"),
    ParamSpec("camera_pose", [], _T.DOUBLE_ARRAY,
              "[x, y, z, roll, pitch, yaw] (metres, radians) of the camera body frame (REP 103: "
              "x along the optical axis, y left, z up) in grid_frame, as static_transform_"
              "publisher grid_frame camera_link would give it; with several cameras six numbers "
              "per camera in the order of cameras (one fused grid). Empty: the pose from TF "
              "(grid_frame -> the image's frame_id at its stamp) where tf2_ros is importable, "
              "else no drivable grid.",
              constraints="empty or six numbers per camera"),
    ParamSpec("publish_drivable_grid", True, _T.BOOL,
              "Publish segmentation/drivable_grid (nav_msgs/OccupancyGrid: 0 drivable, 100 not, "
              "-1 unknown) from camera_info and camera_pose; computed only while someone "
              "subscribes.", dynamic=True),
    ParamSpec("publish_drivable_trust", True, _T.BOOL,
              "Publish segmentation/drivable_trust (sensor_msgs/RelativeHumidity with the "
              "image's header: relative_humidity = the predicted IoU of the frame's drivable "
              "mask, 0..1, variance = the trust model's squared residual) when the checkpoint's "
              "card has a trust model; computed only while someone subscribes.", dynamic=True),
    ParamSpec("trust_threshold", 0.6, _T.DOUBLE,
              "Drivable trust below which a frame's drivable mask is not to be trusted: "
              "/diagnostics turns WARN with the reason, and with trust_unknown_grid its grid "
              "cells are unknown.", dynamic=True, range=(0.0, 1.0)),
    ParamSpec("trust_unknown_grid", False, _T.BOOL,
              "Write the segmentation/drivable_grid cells of a frame whose drivable trust is "
              "below trust_threshold as unknown (-1) instead of free or not drivable.",
              dynamic=True),
    ParamSpec("batch_wait_ms", 5.0, _T.DOUBLE,
              "With several cameras: after a batch's first frame arrived, wait at most this "
              "long for the other cameras' frames (cameras silent for a second are not "
              "waited for).", range=(0.0, 1000.0)),
)
#: Read-only parameters the node derives from the checkpoint (overrides are ignored).
DERIVED_PARAMETERS = {
    "class_names": "Class names of the checkpoint; a label value is an index into this list.",
    "palette": "RGB colour of each class in segmentation/color, flattened: r0, g0, b0, r1, ...",
    "drivable_ids": "Class ids marked 255 in segmentation/drivable_mask.",
}


@dataclass(frozen=True)
class Settings:
    """Validated parameter values."""

    weights: str
    device: str
    precision: str
    torch_device: Any
    """The device ``device`` resolves to (torch.device), resolved once, here."""
    dtype: Any
    """The torch dtype ``precision`` resolves to on it."""
    input_size: tuple[int, int] | None
    drivable_classes: tuple[str, ...] | None
    input_transport: str
    diagnostics_period: float
    overlay_alpha: float
    publish: dict[str, bool]
    cameras: tuple[str, ...] = ()
    """Camera names; empty for the single camera on ``image``."""
    grid: GridSpec | None = None
    """The drivable grid's cells (published with camera_pose, or the pose from TF)."""
    grid_frame: str = GRID_FRAME
    camera_pose: tuple[float, ...] = ()
    """Six numbers per camera in the order of cameras (see :func:`camera_poses`)."""
    publish_grid: bool = True
    batch_wait: float = 0.005
    """Seconds to wait for the other cameras' frames."""
    drivable_rule: DrivableRule = DrivableRule()
    """The drivable decision (drivable_floor, drivable_connected)."""
    publish_trust: bool = True
    trust_threshold: float = 0.6
    """Drivable trust below which a frame is flagged (diagnostics WARN, grid unknown)."""
    trust_unknown_grid: bool = False


def camera_poses(settings: Settings) -> list[tuple[float, ...]]:
    """Each camera's ``[x, y, z, roll, pitch, yaw]`` in the order of ``cameras``."""
    p = settings.camera_pose
    return [tuple(p[i:i + 6]) for i in range(0, len(p), 6)]


def validate(values: dict[str, Any]) -> Settings:
    """Check parameter values (name -> value) for consistency; raise SSNetError naming one."""
    device, precision = str(values["device"]), str(values["precision"])
    try:
        dev = resolve_device(device)
    except SSNetError as exc:
        raise SSNetError(f"parameter device: {exc}") from None
    try:
        dtype = resolve_precision(precision, dev)
    except SSNetError as exc:
        raise SSNetError(f"parameter precision: {exc}") from None
    transport = str(values["input_transport"])
    try:
        input_transport(transport)
    except SSNetError as exc:
        raise SSNetError(f"parameter input_transport: {exc}") from None
    h, w = int(values["input_height"]), int(values["input_width"])
    if (h == 0) != (w == 0):
        raise SSNetError(f"parameters input_height ({h}) and input_width ({w}) must both be 0 "
                         f"(automatic size) or both be positive")
    if h:
        problem = input_size_problem(h, w, dev)
        if problem:
            raise SSNetError(f"parameters input_height and input_width: {problem}")
    drivable = values["drivable_classes"] or None
    cameras = tuple(str(c) for c in values["cameras"] or ())
    for name in cameras:
        if not CAMERA_NAME.fullmatch(name):
            raise SSNetError(f"parameter cameras: {name!r} is not a camera name (letters, "
                             f"digits and _, starting with a letter; / between levels)")
    if len(set(cameras)) != len(cameras):
        raise SSNetError(f"parameter cameras names a camera twice: {list(cameras)}")
    pose = tuple(float(v) for v in values["camera_pose"] or ())
    count = max(1, len(cameras))
    if pose and (len(pose) != 6 * count or not all(math.isfinite(v) for v in pose)):
        each = f"six numbers per camera ({6 * count} for {count} cameras)" if cameras else \
            "six numbers"
        raise SSNetError(f"parameter camera_pose must be empty or {each} [x, y, z, roll, "
                         f"pitch, yaw], got {list(pose)}")
    for i in range(0, len(pose), 6):
        problem = pose_problem(pose[i:i + 6])
        if problem:
            which = f" (camera {cameras[i // 6]})" if cameras else ""
            raise SSNetError(f"parameter camera_pose{which}: {problem}")
    for name in ("grid_x_range", "grid_y_range"):
        rng = list(values[name] or ())
        if len(rng) != 2:
            raise SSNetError(f"parameter {name} must be [min, max], got {rng}")
    try:
        grid = GridSpec(float(values["grid_resolution"]), tuple(values["grid_x_range"]),
                        tuple(values["grid_y_range"]))
    except SSNetError as exc:
        raise SSNetError(f"parameters grid_*: {exc}") from None
    for spec in PARAMETERS:  # ranges rclpy checks too, for values given another way
        problem = change_problem(spec.name, values[spec.name])
        if problem:
            raise SSNetError(f"parameter {problem}")
    if not str(values["grid_frame"]).strip():
        raise SSNetError("parameter grid_frame must not be empty")
    rule = drivable_rule(values)
    return Settings(
        weights=str(values["weights"]), device=device, precision=precision,
        torch_device=dev, dtype=dtype,
        input_size=(h, w) if h else None,
        drivable_classes=tuple(drivable) if drivable else None,
        input_transport=transport, diagnostics_period=float(values["diagnostics_period"]),
        overlay_alpha=float(values["overlay_alpha"]),
        publish={key: bool(values[f"publish_{key}"]) for key in OUTPUTS},
        cameras=cameras, batch_wait=float(values["batch_wait_ms"]) / 1000.0,
        grid=grid, grid_frame=str(values["grid_frame"]), camera_pose=pose,
        publish_grid=bool(values["publish_drivable_grid"]),
        publish_trust=bool(values["publish_drivable_trust"]),
        trust_threshold=float(values["trust_threshold"]),
        trust_unknown_grid=bool(values["trust_unknown_grid"]), drivable_rule=rule)


SPECS = {spec.name: spec for spec in PARAMETERS}
"""The parameter specs by name."""
STARTUP = frozenset(spec.name for spec in PARAMETERS if not spec.dynamic)
"""Parameters read while the node configures (read-only once it has)."""


def change_problem(name: str, value: Any, segmenter: Segmenter | None = None) -> str | None:
    """Why the node must refuse ``value`` for parameter ``name`` (None: it may take it): the
    spec's range; with the model loaded (``segmenter``), a startup parameter at all, and a
    drivable rule the model's classes cannot follow (nothing non-drivable to fall to)."""
    spec = SPECS.get(name)
    if spec is None:
        return None
    if segmenter is not None and name in STARTUP:
        return f"{name} is read while configuring; clean the node up first"
    if spec.range is not None:
        low, high = spec.range
        try:
            inside = low <= float(value) <= high
        except (TypeError, ValueError):
            inside = False
        if not inside:
            return f"{name} {value} is outside {low:g}..{high:g}"
    if name in ("drivable_floor", "drivable_connected") and value and segmenter is not None:
        try:
            check_classes(segmenter.drivable_ids, segmenter.card.num_classes, DrivableRule(1.0))
        except SSNetError as exc:
            return str(exc)
    return None


def updated(settings: Settings, changes: dict[str, Any]) -> Settings:
    """``settings`` with the dynamic parameters in ``changes`` (name -> value) applied."""
    publish = dict(settings.publish)
    for name, value in changes.items():
        if name.startswith("publish_") and name[8:] in OUTPUTS:
            publish[name[8:]] = bool(value)
    rule = settings.drivable_rule
    if "drivable_floor" in changes or "drivable_connected" in changes:
        rule = DrivableRule(float(changes.get("drivable_floor", rule.floor)),
                            bool(changes.get("drivable_connected", rule.connected)))
    get = changes.get
    return dataclasses.replace(
        settings, publish=publish, drivable_rule=rule,
        overlay_alpha=float(get("overlay_alpha", settings.overlay_alpha)),
        publish_grid=bool(get("publish_drivable_grid", settings.publish_grid)),
        publish_trust=bool(get("publish_drivable_trust", settings.publish_trust)),
        trust_threshold=float(get("trust_threshold", settings.trust_threshold)),
        trust_unknown_grid=bool(get("trust_unknown_grid", settings.trust_unknown_grid)))


def drivable_rule(values: dict[str, Any]) -> DrivableRule:
    """The DrivableRule of the drivable_floor and drivable_connected values; SSNetError naming
    the parameter when the floor is not a number within 0..1."""
    try:
        return DrivableRule(float(values["drivable_floor"]), bool(values["drivable_connected"]))
    except (SSNetError, TypeError, ValueError):
        raise SSNetError(f"parameter drivable_floor is {values['drivable_floor']!r}; it must "
                         f"be within 0..1") from None
