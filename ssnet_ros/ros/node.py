"""The ssnet ROS 2 node: camera images in; labels, drivable mask, confidence, colour, overlay out.

Run it with ``ros2 run ssnet_ros segmentation_node --ros-args -p weights:=FILE`` or
``python -m ssnet_ros.node --ros-args ...``. docs/node.md documents topics,
parameters, QoS and diagnostics.

Threading: the subscription callback only validates the message header fields and drops the
message into its camera's one-slot mailbox (newest wins, replaced frames count as skipped);
one worker thread takes the frames of all cameras that arrived together (waiting at most
batch_wait_ms for the others), converts them, segments them in one forward pass per image
size and publishes. Nothing queues, so output latency never grows.
"""

from __future__ import annotations

import array
import dataclasses
import difflib
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import rclpy
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                               ParameterException, ParameterNotDeclaredException)
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RelativeHumidity
from std_msgs.msg import Header

from .batching import FrameGatherer
from .parameters import DERIVED_PARAMETERS, OUTPUTS, PARAMETERS, TRUST_TOPIC, camera_poses, \
    validate
from .conversions import TRANSPORTS, camera_info_topic, mono8_msg, rgb8_msg
from ..errors import SSNetError
from .signals import STOP, Interrupted, die_with_parent
from ..core.render import CHANNELS
from ..core.checkpoint import read_card
from ..core.ground_grid import Camera as GroundCamera
from ..core.ground_grid import GridLookup, calibration_problem, fuse_lookups, grid_lookup, \
    lookup_problem, mark_unknown, pose_from_optical, sample_grid
from ..core.drivable import DrivableRule, check_classes
from ..core.segmenter import Segmenter, resolve_weights
from ..core.stats import Counter, GapCounter, LatencyWindow, RateMeter

NODE_NAME = "ssnet"
#: Input QoS: sensor data, newest only.
INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       history=HistoryPolicy.KEEP_LAST)
#: Output QoS: reliable, a short history.
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE,
                        history=HistoryPolicy.KEEP_LAST)
ERROR_LOG_PERIOD = 5.0
"""Seconds between repeated error logs about rejected frames."""
STAGES = ("conversion", "inference", "publishing", "total")
GRID_TOPIC = "segmentation/drivable_grid"
"""nav_msgs/OccupancyGrid of the drivable mask on the ground (one, fused, for all cameras)."""


class Camera:
    """One camera's topics, publishers and statistics (``name`` "" = the single camera)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = f"{name}/" if name else ""
        self.input_topic = ""
        self.pubs: dict[str, Any] = {}
        self.received, self.skipped, self.rejected = RateMeter(), Counter(), Counter()
        self.failed, self.idle, self.processed = Counter(), Counter(), RateMeter()
        self.gaps = GapCounter()
        """Frames missing from the stamp sequence (lost before the node, estimated)."""
        self.published = {key: Counter() for key in OUTPUTS}
        self.latency = {stage: LatencyWindow() for stage in STAGES}
        self.batch_size = LatencyWindow()
        """Frames segmented together with each frame (a window of counts, not seconds)."""
        self.rejected_reported = 0
        self.failed_reported = 0
        self.info_topic = ""
        self.focal_px: float | None = None
        """fx of the latest camera_info (None until one with a usable K arrived)."""
        self.calibration: CameraInfo | None = None
        """The latest camera_info (its K, D and size project the drivable grid)."""
        self.pose: tuple[float, ...] = ()
        """The camera's pose in grid_frame (from camera_pose)."""
        self.grid: tuple[Any, GridLookup] | None = None
        """(key, lookup) of the drivable grid for the latest calibration and image size."""
        self.grid_published = Counter()
        """Drivable grids this camera's frames went into."""
        self.grid_problem_logged = False
        self.trust_pub: Any = None
        self.trust: float | None = None
        """Drivable trust of the latest frame (None: none yet, or no trust model)."""
        self.trust_reason = ""
        """Why the latest frame's trust is low (empty when it is not)."""
        self.low_trust = Counter()
        """Frames whose drivable trust was below trust_threshold."""
        self.trust_published = Counter()
        self.calibration_problem: str | None = None
        """Why the latest camera_info cannot place a grid (None: usable, or none yet)."""
        self.grid_problem: str | None = None
        """Why the latest frame gave no drivable grid (pose, size, nothing seen; None: fine)."""

    def wanted(self, publish: dict[str, bool]) -> set[str]:
        """Outputs switched on that someone subscribes to."""
        return {key for key, pub in self.pubs.items()
                if publish[key] and pub.get_subscription_count() > 0}


@dataclass
class _Frame:
    """A camera frame on its way through the worker."""

    camera: Camera
    msg: Any
    received: float
    want: set[str]
    rgb: Any = None
    conversion: float = 0.0
    checked: Any = None
    """What the transport's check returned in the callback (its decode needs it)."""


class SegmentationBase:
    """The segmentation node's behaviour, in phases both node kinds run (mixed into a Node):

    declare (parameters) -> load (validate them, load the weights, warm up) -> open outputs ->
    open inputs (subscriptions, worker, diagnostics timer); and back: close inputs (nothing
    queued is kept) -> close outputs -> unload. :class:`SegmentationNode` runs the first four
    in its constructor; :class:`~ssnet_ros.ros.lifecycle.SegmentationLifecycleNode` runs them
    in its lifecycle transitions.
    """

    segmenter: Segmenter | None
    #: startup parameters may change while unconfigured (lifecycle node), never in the plain node
    STARTUP_PARAMETERS_WRITABLE = False

    def _init_state(self) -> None:
        self.segmenter = None
        self._last_error_log = -ERROR_LOG_PERIOD
        self._errors_suppressed = 0
        self.callback_errors = 0
        """Exceptions raised inside executor callbacks (e.g. a peer's malformed request)."""
        self.cameras: list[Camera] = []
        self._gatherer: FrameGatherer[tuple[Any, float, Any]] | None = None
        self._worker: threading.Thread | None = None
        self._inputs: list[Any] = []
        self._timer: Any = None
        self._diagnostics: Any = None
        self._derived_declared = False
        self._declaring = False
        given = getattr(self, "_parameter_overrides", {}).get("drivable_classes")
        self._drivable_given = bool(given is not None and given.value)
        """drivable_classes came from the user (else it holds the checkpoint's names)."""
        self.add_on_set_parameters_callback(self._check_new_parameters)
        self.add_post_set_parameters_callback(self._apply_new_parameters)

    def _load(self, values: dict[str, Any]) -> None:
        """Validate ``values`` and load the weights; SSNetError with one sentence if unusable."""
        if not self._drivable_given:  # the checkpoint's own names (they may have changed)
            values = {**values, "drivable_classes": []}
        self.settings = validate(values)
        s = self.settings
        try:
            self.segmenter = Segmenter(s.weights or None, device=s.device,
                                       precision=s.precision, input_size=s.input_size,
                                       drivable_classes=s.drivable_classes,
                                       drivable_rule=s.drivable_rule)
        except SSNetError as exc:
            if s.drivable_classes and "drivable classes" in str(exc):
                raise SSNetError(f"parameter drivable_classes: {exc}") from None
            raise
        if not s.drivable_classes:  # hold the effective names, never "not set"
            self._hold(Parameter("drivable_classes", Parameter.Type.STRING_ARRAY,
                                 list(self.segmenter.card.drivable_classes)))
        self._declare_derived_parameters()

    def _open_outputs(self) -> None:
        s = self.settings
        self.cameras = [Camera(name) for name in s.cameras or ("",)]
        for cam, pose in zip(self.cameras, camera_poses(s)):
            cam.pose = pose
        for cam in self.cameras:
            cam.pubs = {key: self.create_publisher(Image, cam.prefix + topic, OUTPUT_QOS)
                        for key, topic in OUTPUTS.items()}
            cam.trust_pub = self.create_publisher(RelativeHumidity, cam.prefix + TRUST_TOPIC,
                                                  OUTPUT_QOS)
        self._tf_buffer = self._tf_listener = None
        self._grid_pub = self.create_publisher(OccupancyGrid, GRID_TOPIC, OUTPUT_QOS) \
            if self._open_grid_source() else None
        self._fused: tuple[Any, GridLookup] | None = None
        self._warmed: set[tuple[int, int, float | None, frozenset[str]]] = set()
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _open_inputs(self) -> None:
        s = self.settings
        self._gatherer = FrameGatherer(len(self.cameras))
        raw = s.input_transport == "raw"
        kind = TRANSPORTS[s.input_transport]  # checked once in the callback, decoded once
        self._convert, self._check = kind.decode, kind.check
        self._inputs = []
        for index, cam in enumerate(self.cameras):
            image = cam.prefix + "image"
            cam.input_topic = self.resolve_topic_name(image) if raw else \
                self._compressed_topic(image)
            self._inputs.append(self.create_subscription(
                Image if raw else CompressedImage, cam.input_topic,
                lambda msg, i=index: self._on_image(i, msg), INPUT_QOS))
            cam.info_topic = camera_info_topic(self.resolve_topic_name(image) if raw else
                                               cam.input_topic.removesuffix("/compressed"))
            self._inputs.append(self.create_subscription(
                CameraInfo, cam.info_topic, lambda msg, c=cam: self._on_camera_info(c, msg),
                INPUT_QOS))
        # a steady clock: diagnostics go on while a simulated /clock pauses
        self._timer = self.create_timer(s.diagnostics_period, self._publish_diagnostics,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, name="ssnet-worker", daemon=True)
        self._worker.start()
        assert self.segmenter is not None
        topics = ", ".join(cam.input_topic for cam in self.cameras)
        self.get_logger().info(
            f"segmenting {topics} ({s.input_transport}) with "
            f"{self.segmenter.weights} on {self.segmenter.device} "
            f"({str(self.segmenter.dtype).removeprefix('torch.')}), network input "
            f"{self._network_input()}")
        if getattr(self, "_grid_pub", None) is not None:
            g = s.grid
            assert g is not None
            source = f"camera_pose {list(s.camera_pose)}" if s.camera_pose else \
                "TF (grid_frame -> each image's frame_id)"
            infos = ", ".join(cam.info_topic for cam in self.cameras)
            self.get_logger().info(
                f"drivable grid on: {self.resolve_topic_name(GRID_TOPIC)} in {s.grid_frame}, "
                f"x {list(g.x_range)} m, y {list(g.y_range)} m, {g.resolution} m cells, "
                f"camera pose from {source}; waiting for camera_info on {infos} (no grid "
                f"before it comes)" + ("" if s.publish_grid else
                                       "; publish_drivable_grid is false for now"))

    def _close_inputs(self, timeout: float = 1.0) -> bool:
        """Stop taking frames: drop what waits, let the worker finish the frame in hand (up
        to ``timeout`` s); False when it is still busy (it stops after it)."""
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        finished = True
        if self._gatherer is not None:
            self._gatherer.close()
        if self._worker is not None:
            self._worker.join(timeout)
            finished = not self._worker.is_alive()
            if not finished:
                self.get_logger().warning("stopping while a frame is still being segmented")
        self._worker = None
        return finished

    def _close_outputs(self) -> None:
        for cam in self.cameras:
            for pub in cam.pubs.values():
                self.destroy_publisher(pub)
            if cam.trust_pub is not None:
                self.destroy_publisher(cam.trust_pub)
        if self._diagnostics is not None:
            self.destroy_publisher(self._diagnostics)
            self._diagnostics = None
        if getattr(self, "_grid_pub", None) is not None:
            self.destroy_publisher(self._grid_pub)
            self._grid_pub = None
        self._tf_buffer = self._tf_listener = None
        self.cameras = []

    def _unload(self) -> None:
        """Release the model (and the GPU memory it held)."""
        self.segmenter = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- parameters -------------------------------------------------------------------------

    def _declare_parameters(self) -> dict[str, Any]:
        self._declaring = True
        try:
            return self._declare_each()
        finally:
            self._declaring = False

    def _declare_each(self) -> dict[str, Any]:
        values = {}
        for spec in PARAMETERS:
            default = spec.type if spec.default == [] else spec.default  # rclpy: typed empty
            if spec.name == "drivable_classes":  # hold the effective names, never "not set"
                default = self._checkpoint_drivable(values["weights"]) or default
            try:
                param = self.declare_parameter(
                    spec.name, default, spec.descriptor(self.STARTUP_PARAMETERS_WRITABLE))
            except InvalidParameterTypeException as exc:
                raise SSNetError(f"parameter {spec.name} must be of type "
                                 f"{spec.type.name.lower()} ({_reason(exc)})") from None
            except InvalidParameterValueException as exc:
                if spec.range is None:
                    raise SSNetError(f"parameter {spec.name}: {_reason(exc)}") from None
                given = re.search(r"value \((.*?)\) for parameter", str(exc))
                raise SSNetError(f"parameter {spec.name} is {given[1] if given else 'invalid'}; "
                                 f"it must be within {spec.range[0]}..{spec.range[1]}") \
                    from None
            except ParameterException as exc:
                raise SSNetError(f"parameter {spec.name}: {_reason(exc)}") from None
            if param.value is None:  # an empty list: give it a typed empty value
                self._hold_empty(spec.name, spec.type)
            values[spec.name] = [] if param.value is None else param.value
        return values

    def _hold_empty(self, name: str, kind: Parameter.Type) -> None:
        """Give a declared array parameter without value the typed empty value.

        rclpy declares ``[]`` defaults as "not set", and answers a GetParameters request that
        names one with no values at all (``ros2 param dump`` gets nothing). rclpy has no public
        way to give a read-only parameter a typed empty array, so it is set in its table."""
        self._hold(Parameter(name, kind, []))

    def _hold(self, param: Parameter) -> None:
        """Set a (read-only) parameter's value the node derives itself."""
        self._parameters[param.name] = param  # type: ignore[attr-defined]

    def _current_values(self) -> dict[str, Any]:
        """The user-settable parameters' current values (name -> value)."""
        values = {}
        for spec in PARAMETERS:
            value = self.get_parameter(spec.name).value  # type: ignore[attr-defined]
            values[spec.name] = [] if value is None else value
        return values

    @staticmethod
    def _checkpoint_drivable(weights: str) -> list[str]:
        """The drivable class names of the checkpoint ``weights`` names ([] if unreadable:
        loading it later reports why)."""
        try:
            return list(read_card(resolve_weights(weights or None)).drivable_classes)
        except SSNetError:
            return []

    def _warn_unknown_overrides(self) -> None:
        """One warning naming overrides of parameters this node does not declare."""
        declared = [spec.name for spec in PARAMETERS] + list(DERIVED_PARAMETERS)
        unknown = sorted(n for n in self._parameter_overrides  # rclpy declares some itself
                         if n not in declared and not self.has_parameter(n))
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, declared, n=1)
                hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
            self.get_logger().warning(
                f"ignoring parameters this node does not have: {', '.join(hints)}")

    def _declare_derived_parameters(self) -> None:
        seg = self.segmenter
        assert seg is not None
        values = {"class_names": list(seg.class_names),
                  "palette": [int(v) for colour in seg.palette for v in colour],
                  "drivable_ids": [int(i) for i in seg.drivable_ids]}
        types = {"class_names": Parameter.Type.STRING_ARRAY,
                 "palette": Parameter.Type.INTEGER_ARRAY,
                 "drivable_ids": Parameter.Type.INTEGER_ARRAY}
        for name, description in DERIVED_PARAMETERS.items():
            if self._derived_declared:  # configured again (lifecycle): new values
                self._hold(Parameter(name, types[name], values[name]))
                continue
            descriptor = ParameterDescriptor(name=name, type=types[name].value, read_only=True,
                                             description=description)
            self.declare_parameter(name, values[name] or types[name], descriptor,
                                   ignore_override=True)
            if not values[name]:
                self._hold_empty(name, types[name])
        self._derived_declared = True

    def _check_undeclared_parameters(self, parameter_list: list[Parameter]) -> None:
        """rclpy's check, fixed: it names the undeclared parameters (rclpy consumes its
        generator and says ``[]``) and refuses an empty name (rclpy lets it through)."""
        declared = self._parameters  # type: ignore[attr-defined]
        undeclared = [p.name for p in parameter_list if not p.name or p.name not in declared]
        if undeclared:
            raise ParameterNotDeclaredException(undeclared)

    def _check_new_parameters(self, params: list[Parameter]) -> SetParametersResult:
        startup = {spec.name for spec in PARAMETERS if not spec.dynamic}
        for p in params:
            if p.name in startup and self.segmenter is not None:
                return SetParametersResult(successful=False, reason=(
                    f"{p.name} is read while configuring; clean the node up first"))
            if p.name in ("overlay_alpha", "trust_threshold") and \
                    not 0.0 <= float(p.value) <= 1.0:
                return SetParametersResult(successful=False,
                                           reason=f"{p.name} {p.value} is outside 0..1")
            if p.name == "drivable_floor" and not 0.0 <= float(p.value) <= 1.0:
                return SetParametersResult(successful=False,
                                           reason=f"drivable_floor {p.value} is outside 0..1")
            seg = self.segmenter
            if p.name in ("drivable_floor", "drivable_connected") and p.value \
                    and seg is not None:
                try:
                    check_classes(seg.drivable_ids, seg.card.num_classes, DrivableRule(1.0))
                except SSNetError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_new_parameters(self, params: list[Parameter]) -> None:
        if self.segmenter is None:  # not configured: read at the next configure
            if not self._declaring:
                self._drivable_given |= any(p.name == "drivable_classes" for p in params)
            return
        s = self.settings
        publish, alpha = dict(s.publish), s.overlay_alpha
        for p in params:
            if p.name == "overlay_alpha":
                alpha = float(p.value)
            elif p.name.startswith("publish_") and p.name[8:] in OUTPUTS:
                publish[p.name[8:]] = bool(p.value)
        value = {p.name: p.value for p in params}
        rule = s.drivable_rule
        for p in params:  # applied by the worker thread before its next batch
            if p.name == "drivable_floor":
                rule = DrivableRule(float(p.value), rule.connected)
            elif p.name == "drivable_connected":
                rule = DrivableRule(rule.floor, bool(p.value))
        self.settings = dataclasses.replace(
            s, overlay_alpha=alpha, publish=publish,
            publish_grid=bool(value.get("publish_drivable_grid", s.publish_grid)),
            publish_trust=bool(value.get("publish_drivable_trust", s.publish_trust)),
            trust_threshold=float(value.get("trust_threshold", s.trust_threshold)),
            trust_unknown_grid=bool(value.get("trust_unknown_grid", s.trust_unknown_grid)),
            drivable_rule=rule)

    def _compressed_topic(self, image: str) -> str:
        """``image``/compressed, following remaps of ``image`` as image_transport does."""
        explicit = self.resolve_topic_name(f"{image}/compressed")
        if explicit != self.resolve_topic_name(f"{image}/compressed", only_expand=True):
            return explicit
        return self.resolve_topic_name(image) + "/compressed"

    def _network_input(self) -> str:
        """The network input size as the log and the diagnostics state it."""
        s, seg = self.settings, self.segmenter
        if s.input_size is not None:
            return f"{s.input_size[0]}x{s.input_size[1]}"
        if not seg.card.input_rule:
            return "each image's own size"
        focal = f", focal {seg.focal_px:.1f} px" if seg.focal_px else ""
        return f"automatic (model card rule{focal})"

    # -- data path --------------------------------------------------------------------------

    def _on_camera_info(self, cam: Camera, msg: CameraInfo) -> None:
        problem = calibration_problem(tuple(float(v) for v in msg.k), int(msg.width),
                                      int(msg.height), tuple(float(v) for v in msg.d),
                                      str(msg.distortion_model))
        cam.focal_px = None if problem else float(msg.k[0])
        cam.calibration = None if problem else msg
        if problem and problem != cam.calibration_problem:
            self.get_logger().warning(f"no drivable grid from {cam.info_topic}: its "
                                      f"camera_info is unusable: {problem}")
        cam.calibration_problem = problem
        if not problem and self.segmenter.cuda_graphs:
            self._warm_up(cam, msg.height, msg.width)

    def _warm_up(self, cam: Camera, height: int, width: int) -> None:
        """Capture the CUDA graph of this camera's frames (size from camera_info, focal
        length, the outputs wanted now) before the first frame comes, once per such key."""
        outputs = cam.wanted(self.settings.publish) | (
            {"drivable_mask"} if self._grid_wanted() else set())
        key = (height, width, cam.focal_px, frozenset(outputs))
        if not outputs or key in self._warmed:
            return
        self._warmed.add(key)
        self.segmenter.warm_up(height, width, outputs=outputs, focal_px=cam.focal_px)

    def _on_image(self, index: int, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        cam = self.cameras[index]
        cam.received.tick(now)
        cam.gaps.add(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        try:
            checked = self._check(msg)
        except SSNetError as exc:
            self._reject(cam, exc)
            return
        if self._gatherer.put(index, (msg, now, checked)):
            cam.skipped.add()

    def _work(self) -> None:
        while (batch := self._gatherer.take(self.settings.batch_wait)) is not None:
            frames = [_Frame(self.cameras[i], msg, received, set(), checked=checked)
                      for i, (msg, received, checked) in batch]
            try:
                self._process(frames)
            except Exception as exc:  # keep serving; a closing node may see destroyed handles
                if self._gatherer.closed:
                    return
                for frame in frames:
                    frame.camera.failed.add()
                self._log_error(f"segmentation failed: {exc!r}")

    def _reject(self, cam: Camera, exc: SSNetError) -> None:
        cam.rejected.add()
        self._log_error(f"rejected a malformed image: {exc}")

    def _log_error(self, text: str) -> None:
        """Log an error at most once per ERROR_LOG_PERIOD (rclpy's throttle costs ~1 ms)."""
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_PERIOD:
            self._last_error_log = now
            suppressed, self._errors_suppressed = self._errors_suppressed, 0
            more = f" ({suppressed} similar errors not logged)" if suppressed else ""
            self.get_logger().error(text + more)
        else:
            self._errors_suppressed += 1

    def _process(self, frames: list[_Frame]) -> None:
        """Convert the frames, segment them together and publish each camera's outputs."""
        s = self.settings
        ready = []
        grid = self._grid_wanted()
        model = self.segmenter.trust_model
        for frame in frames:
            frame.want = frame.camera.wanted(s.publish)
            if model is not None and s.publish_trust and \
                    frame.camera.trust_pub.get_subscription_count() > 0:
                frame.want.add("drivable_trust")
            if not frame.want and not grid:
                frame.camera.idle.add()
                continue
            t0 = time.perf_counter()
            try:
                frame.rgb = self._convert(frame.msg, frame.checked)
            except SSNetError as exc:
                self._reject(frame.camera, exc)
                continue
            frame.conversion = time.perf_counter() - t0
            ready.append(frame)
        if not ready:
            return
        t1 = time.perf_counter()
        if self.segmenter.drivable_rule != s.drivable_rule:
            self.segmenter.set_drivable_rule(s.drivable_rule)
        focals = {frame.camera.focal_px for frame in ready}
        self.segmenter.set_focal_length(focals.pop() if len(focals) == 1 else None)
        outputs = set().union(*(frame.want for frame in ready)) | (
            {"drivable_mask"} if grid else set())
        outputs.discard("drivable_trust")
        results = self.segmenter.render_batch([frame.rgb for frame in ready], outputs,
                                              overlay_alpha=s.overlay_alpha,
                                              trust=model is not None)
        inference = time.perf_counter() - t1
        for frame, result in zip(ready, results):
            self._note_trust(frame.camera, result)
        if grid:
            self._publish_grid([(f.camera, r["drivable_mask"], f.msg.header)
                                for f, r in zip(ready, results)])
        for frame, result in zip(ready, results):
            t2 = time.perf_counter()
            cam, header = frame.camera, frame.msg.header
            for key in OUTPUTS:
                if key in frame.want:
                    make = mono8_msg if CHANNELS[key] == 1 else rgb8_msg
                    cam.pubs[key].publish(make(result[key], header))
                    cam.published[key].add()
            if "drivable_trust" in frame.want and cam.trust is not None:
                cam.trust_pub.publish(RelativeHumidity(
                    header=header, relative_humidity=cam.trust,
                    variance=float(model.residual_std) ** 2))
                cam.trust_published.add()
            cam.processed.tick()
            cam.batch_size.add(float(len(ready)))
            for stage, seconds in (("conversion", frame.conversion), ("inference", inference),
                                   ("publishing", time.perf_counter() - t2),
                                   ("total", time.monotonic() - frame.received)):
                cam.latency[stage].add(seconds)

    def _note_trust(self, cam: Camera, result: dict[str, Any]) -> None:
        """Keep a frame's drivable trust (and why it is low) for its camera."""
        if "drivable_trust" not in result:
            return
        cam.trust = float(result["drivable_trust"])
        cam.trust_reason = ""
        if cam.trust < self.settings.trust_threshold:
            cam.low_trust.add()
            cam.trust_reason = self.segmenter.trust_model.reason(result["trust_features"])

    def _distrusted(self, cam: Camera) -> bool:
        """True when the camera's latest frame is below trust_threshold and
        trust_unknown_grid asks for its grid cells to be unknown."""
        s = self.settings
        return bool(s.trust_unknown_grid and cam.trust is not None
                    and cam.trust < s.trust_threshold)

    # -- drivable grid ----------------------------------------------------------------------

    def _grid_wanted(self) -> bool:
        s, pub = self.settings, getattr(self, "_grid_pub", None)
        return bool(s.publish_grid and pub is not None and pub.get_subscription_count() > 0)

    def _publish_grid(self, frames: list[tuple[Camera, Any, Header]]) -> None:
        """Project the frames' drivable masks (mono8) onto the ground and publish one
        OccupancyGrid: with several cameras each cell takes the nearest camera that sees it
        (of the cameras in this batch); the stamp is the newest of their images'."""
        parts = [(cam, lookup, mask, header) for cam, mask, header in frames
                 if (lookup := self._lookup_or_problem(cam, mask.shape[:2], header))
                 is not None]
        if not parts:
            return
        key = tuple(id(lookup) for _, lookup, _, _ in parts)
        if self._fused is None or self._fused[0] != key:
            lookups = [lookup for _, lookup, _, _ in parts]
            self._fused = (key, lookups[0] if len(lookups) == 1 else fuse_lookups(lookups))
        data = sample_grid(self._fused[1], *(mask > 0 for _, _, mask, _ in parts))
        data = mark_unknown(self._fused[1], data,
                            [i for i, (cam, *_) in enumerate(parts) if self._distrusted(cam)])
        stamp = max((header.stamp for *_, header in parts),
                    key=lambda t: (t.sec, t.nanosec))
        s, g = self.settings, self.settings.grid
        msg = OccupancyGrid()
        msg.header = Header(stamp=stamp, frame_id=s.grid_frame)
        msg.info.map_load_time = stamp
        msg.info.resolution = float(g.resolution)
        msg.info.width, msg.info.height = g.width, g.height
        msg.info.origin.position.x, msg.info.origin.position.y = g.x_range[0], g.y_range[0]
        msg.info.origin.orientation.w = 1.0
        msg.data = array.array("b", data.reshape(-1).tobytes())
        self._grid_pub.publish(msg)
        for cam, *_ in parts:
            cam.grid_published.add()

    def _open_grid_source(self) -> bool:
        """Where the cameras' poses come from: camera_pose, else TF (tf2_ros); False, said
        once, when neither is there (no drivable grid)."""
        s = self.settings
        if s.grid is None or s.camera_pose:
            return s.grid is not None
        try:
            import tf2_ros
        except ImportError:
            self.get_logger().info(
                "no segmentation/drivable_grid: camera_pose is empty and tf2_ros is not "
                "importable here, so there is no camera pose (set camera_pose)")
            return False
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)
        self.get_logger().info(f"drivable grid: camera poses from TF ({s.grid_frame} -> "
                               f"each image's frame_id)")
        return True

    def _camera_pose(self, cam: Camera, header: Header) -> tuple[float, ...] | None:
        """The camera's pose in grid_frame: camera_pose, or TF at the image's stamp."""
        if cam.pose:
            return cam.pose
        if self._tf_buffer is None:
            return None
        from rclpy.time import Time

        try:
            tf = self._tf_buffer.lookup_transform(self.settings.grid_frame, header.frame_id,
                                                  Time.from_msg(header.stamp))
            t, q = tf.transform.translation, tf.transform.rotation
            return pose_from_optical((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except Exception as exc:  # noqa: BLE001 - tf2 raises several lookup exceptions
            self._log_error(f"no drivable grid from {cam.input_topic}: no transform "
                            f"{self.settings.grid_frame} -> {header.frame_id!r}: {exc}")
            return None

    def _lookup_or_problem(self, cam: Camera, size: tuple[int, int], header: Header
                           ) -> GridLookup | None:
        """:meth:`_camera_lookup`, with why there is none kept for the diagnostics."""
        try:
            lookup = self._camera_lookup(cam, size, header)
        except SSNetError as exc:
            lookup, cam.grid_problem = None, str(exc)
        if lookup is not None:
            cam.grid_problem = lookup_problem(lookup)
            if cam.grid_problem:
                self._log_error(f"no drivable grid from {cam.input_topic}: "
                                f"{cam.grid_problem}")
                return None
        elif cam.calibration is not None and cam.grid_problem is None:
            cam.grid_problem = "no camera pose (see the log)"
        return lookup

    def _camera_lookup(self, cam: Camera, size: tuple[int, int], header: Header
                       ) -> GridLookup | None:
        """The camera's cell-to-pixel lookup for its latest camera_info, pose and this image
        size (computed once per calibration and pose); None, said once, while there is no
        usable camera_info."""
        s, info = self.settings, cam.calibration
        if info is None or s.grid is None:
            if not cam.grid_problem_logged:
                cam.grid_problem_logged = True
                self.get_logger().warning(
                    f"no drivable grid from {cam.input_topic} yet: no usable camera_info on "
                    f"{cam.info_topic}")
            return None
        pose = self._camera_pose(cam, header)
        if pose is None:
            return None
        key = (tuple(info.k), tuple(info.d), info.distortion_model, info.width, info.height,
               size, pose, s.grid)
        if cam.grid is None or cam.grid[0] != key:
            try:
                camera = GroundCamera(tuple(float(v) for v in info.k), int(info.width),
                                      int(info.height), pose,
                                      tuple(float(v) for v in info.d), info.distortion_model)
                cam.grid = (key, grid_lookup(camera, s.grid, size))
            except SSNetError as exc:
                self._log_error(f"no drivable grid: camera_info on {cam.info_topic}: {exc}")
                raise
        return cam.grid[1]

    # -- diagnostics ------------------------------------------------------------------------

    def _status(self, cam: Camera) -> DiagnosticStatus:
        """A camera's health and statistics (rejections are counted as reported once)."""
        seg, s = self.segmenter, self.settings
        rate_in, rate_out = cam.received.rate(), cam.processed.rate()
        rejected, failed = cam.rejected.value, cam.failed.value
        new_rejects, cam.rejected_reported = rejected - cam.rejected_reported, rejected
        new_failures, cam.failed_reported = failed - cam.failed_reported, failed
        level, message = DiagnosticStatus.OK, f"{rate_in:.1f} Hz in, {rate_out:.1f} Hz out"
        grid = self._grid_trouble(cam)
        if cam.received.total == 0:
            message = f"waiting for images on {cam.input_topic}"
        elif new_rejects:
            level, message = DiagnosticStatus.WARN, f"rejected {new_rejects} malformed images"
        elif new_failures:
            level, message = DiagnosticStatus.WARN, f"{new_failures} frames failed"
        elif cam.trust is not None and cam.trust < s.trust_threshold:
            level, message = DiagnosticStatus.WARN, (
                f"drivable trust {cam.trust:.2f} below trust_threshold "
                f"{s.trust_threshold:.2f}: {cam.trust_reason}")
        elif rate_in == 0.0 and rate_out == 0.0:  # too few frames in the window for a rate
            message = (f"last image {time.monotonic() - cam.received.last:.1f} s ago on "
                       f"{cam.input_topic}, {cam.processed.total} processed in all")
        if grid:
            message = f"no drivable grid: {grid}" if level == DiagnosticStatus.OK else \
                f"{message}; no drivable grid: {grid}"
            level = DiagnosticStatus.WARN
        values = {
            "input_rate_hz": f"{rate_in:.2f}", "output_rate_hz": f"{rate_out:.2f}",
            "frames_received": cam.received.total, "frames_processed": cam.processed.total,
            "frames_skipped": cam.skipped.value, "frames_rejected": rejected,
            "frames_failed": failed, "frames_unwatched": cam.idle.value,
            "frames_rejected_recent": new_rejects, "frames_failed_recent": new_failures,
            "frames_lost_before_node": cam.gaps.lost,
            "callback_errors": self.callback_errors,
        }
        for stage, window in cam.latency.items():
            for q in (50, 99):
                values[f"{stage}_p{q}_ms"] = f"{window.percentile_ms(q):.2f}"
        values.update({f"published_{key}": c.value for key, c in cam.published.items()})
        values["published_drivable_grid"] = cam.grid_published.value
        values["published_drivable_trust"] = cam.trust_published.value
        values["drivable_trust"] = (f"{cam.trust:.3f}" if cam.trust is not None else
                                    "none yet" if seg.trust_model is not None else
                                    "none (the checkpoint's card has no trust model)")
        values["trust_threshold"] = f"{s.trust_threshold:.2f}"
        values["frames_low_trust"] = cam.low_trust.value
        values["drivable_grid_problem"] = grid or "none"
        batch = cam.batch_size.percentile_ms(50) / 1000.0  # counts, not seconds
        values.update({
            "input_topic": cam.input_topic, "weights": str(seg.weights),
            "device": str(seg.device), "precision": str(seg.dtype).removeprefix("torch."),
            "network_input": self._network_input(),
            "batch_size_p50": "nan" if batch != batch else f"{batch:.0f}",
            "cuda_graphs": "on" if seg.cuda_graphs else
            (f"off ({seg.graph_error})" if seg.graph_error else "off"),
        })
        if cam.name:
            values["camera"] = cam.name
        return DiagnosticStatus(level=level,
                                name=status_name(self.get_fully_qualified_name(), cam.name),
                                message=message, hardware_id=str(seg.device),
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    def _grid_trouble(self, cam: Camera) -> str | None:
        """Why this camera gives no drivable grid while the node is to publish one (None: it
        does, or none is configured)."""
        if getattr(self, "_grid_pub", None) is None or not self.settings.publish_grid:
            return None
        if cam.calibration_problem:
            return f"camera_info on {cam.info_topic} is unusable: {cam.calibration_problem}"
        if cam.calibration is None and cam.received.total > 0 and (
                self.settings.camera_pose or self._grid_wanted()):  # asked for, or listened to
            return f"no camera_info on {cam.info_topic}"
        return cam.grid_problem

    def _publish_diagnostics(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(DiagnosticArray(
            header=header, status=[self._status(cam) for cam in self.cameras]))

    # -- lifetime ---------------------------------------------------------------------------

    def callback_failed(self, exc: Exception) -> None:
        """Count and log (throttled) an exception an executor callback raised; keep serving.

        rclpy raises inside the executor for requests it cannot handle, e.g. a
        SetParameters request whose ParameterValue.type is not a valid type byte."""
        self.callback_errors += 1
        self._log_error(f"ignored a failing callback or request: "
                        f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")

    def close(self, timeout: float = 1.0) -> bool:
        """Stop the worker (waiting up to ``timeout`` s for a running frame) and destroy the
        node; False when the worker is still busy with a frame (it stops after it)."""
        finished = self._close_inputs(timeout)
        self.destroy_node()  # type: ignore[attr-defined]
        return finished


class SegmentationNode(SegmentationBase, Node):
    """Subscribes to camera images and publishes their semantic segmentation.

    Raises :class:`SSNetError` with one sentence when a parameter or the weights are unusable.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        Node.__init__(self, node_name, **kwargs)
        self._init_state()
        values = self._declare_parameters()
        self._load(values)
        self._warn_unknown_overrides()
        self._open_outputs()
        self._open_inputs()



def status_name(fully_qualified_node_name: str, camera: str = "") -> str:
    """A camera's DiagnosticStatus name: ``front/ssnet: semantic segmentation`` for the single
    camera, ``ssnet: semantic segmentation of rear_left`` for camera rear_left."""
    name = f"{fully_qualified_node_name.lstrip('/')}: semantic segmentation"
    return f"{name} of {camera}" if camera else name


def _reason(exc: ParameterException) -> str:
    """rclpy's message without its trailing ': <parameter name>'."""
    return str(exc).rsplit(": ", 1)[0]


_Interrupted = Interrupted


#: oneDNN (PyTorch's CPU kernels) caches compiled primitives per input shape, 1024 by default;
#: a node that sees many image sizes grew by 850 MB over 250 sizes. 128 holds the primitives of
#: about five image sizes of SSNet; raise it (same variables) for more cameras of other sizes.
CPU_KERNEL_CACHE = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "128"}


def bound_cpu_kernel_cache() -> None:
    """Bound oneDNN's per-shape caches unless the environment sets them (read lazily, so
    this works as long as no convolution ran yet)."""
    for key, value in CPU_KERNEL_CACHE.items():
        os.environ.setdefault(key, value)


def usage(program: str = "segmentation_node") -> str:
    """Command-line help listing the parameters."""
    lines = [f"usage: {program} [--ros-args -p NAME:=VALUE ... -r image:=TOPIC]", "",
             "parameters:"]
    for spec in PARAMETERS:
        default = spec.default if spec.default != "" else '""'
        lines.append(f"  {spec.name} ({spec.type.name.lower()}, default {default}): "
                     f"{spec.description}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, node_class: type | None = None,
         program: str = "segmentation_node") -> int:
    """Run the node until SIGINT or SIGTERM; 0 on a clean stop, 1 when it cannot start.

    ``node_class`` is SegmentationNode, or the lifecycle node (which starts unconfigured)."""
    node_class = node_class or SegmentationNode
    args = list(sys.argv if argv is None else argv)
    try:
        user_args = remove_ros_args(args)[1:]
    except Exception as exc:  # a malformed --ros-args section (bad remap, bad -p)
        text = " ".join(str(exc).split()).split(". Error:")[0].split(", at /")[0]
        print(f"{program}: cannot start: {text}", file=sys.stderr)
        return 2
    if user_args in (["-h"], ["--help"]):
        print(usage(program))
        return 0
    if user_args:
        print(f"{program}: unexpected arguments {user_args}; parameters go after "
              f"--ros-args as -p NAME:=VALUE (see --help)", file=sys.stderr)
        return 2
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # malformed --ros-args
        print(f"{program}: cannot start: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    bound_cpu_kernel_cache()
    stop = STOP  # set by a signal during the imports too (ssnet_ros.startup)
    ready = False
    node: Any = None

    def on_signal(signum: int, frame: Any) -> None:
        # Signal policy: the first SIGINT/SIGTERM stops the node (while it starts, or a
        # lifecycle configure loads the model, it ends that at once); later ones (a double
        # Ctrl-C, a launch system forwarding the signal) are ignored while it stops, which
        # takes at most the worker's join timeout, so nothing is interrupted half-way.
        first = not stop.is_set()
        stop.set()
        if first and (not ready or getattr(node, "configuring", False)):
            raise _Interrupted

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    die_with_parent()
    if stop.is_set():  # a signal arrived while the modules were imported
        rclpy.try_shutdown()
        return 0
    code = 0
    finished = True
    try:
        try:
            node = node_class()
        except (SSNetError, _Interrupted):
            raise
        except Exception as exc:  # e.g. an invalid topic name from a remap: one sentence
            raise SSNetError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") \
                from None
        ready = True
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except Exception as exc:  # a peer's malformed request must not end the node
                node.callback_failed(exc)
        executor.shutdown(timeout_sec=0.2)
    except SSNetError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        code = 1
    except _Interrupted:
        pass
    finally:
        ready = True  # from here on every signal is ignored (see on_signal)
        finished = node.close() if node is not None else True
        rclpy.try_shutdown()
        for sig in (signal.SIGINT, signal.SIGTERM):  # ending: every later signal is ignored
            signal.signal(sig, signal.SIG_IGN)
    if not finished:
        # The worker is still inside the network; interpreter teardown would abort under it
        # ("terminate called without an active exception"), so leave without teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
