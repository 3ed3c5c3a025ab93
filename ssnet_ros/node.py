"""The ssnet ROS 2 node: camera images in; labels, drivable mask, confidence, colour, overlay out.

Run it with ``ros2 run ssnet_ros segmentation_node --ros-args -p weights:=FILE`` or
``python -m ssnet_ros.node --ros-args ...``. See docs/ros_interface.md for topics, parameters,
QoS and diagnostics.

Threading: the subscription callback only validates the message header fields and drops the
message into a one-slot mailbox (newest wins, replaced frames count as skipped); one worker
thread converts, segments and publishes. Nothing queues, so output latency never grows.
"""

from __future__ import annotations

import dataclasses
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
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                               ParameterException)
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from .conversions import check_compressed, check_image, compressed_to_rgb, image_to_rgb, \
    mono8_msg, rgb8_msg
from .errors import SSNetError
from .mailbox import Mailbox
from .segmenter import PRECISIONS, Segmenter, resolve_device, resolve_precision
from .stats import Counter, LatencyWindow, RateMeter
from .visualize import colorize, confidence_to_mono8, mask_to_mono8, overlay, palette_lut

NODE_NAME = "ssnet"
TRANSPORTS = ("raw", "compressed")
#: Output topics (relative to the node's namespace) keyed by their publish_* switch.
OUTPUTS = {"labels": "segmentation/labels", "drivable_mask": "segmentation/drivable_mask",
           "confidence": "segmentation/confidence", "color": "segmentation/color",
           "overlay": "segmentation/overlay"}
#: Input QoS: sensor data, newest only.
INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       history=HistoryPolicy.KEEP_LAST)
#: Output QoS: reliable, a short history.
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE,
                        history=HistoryPolicy.KEEP_LAST)
ERROR_LOG_PERIOD = 5.0
"""Seconds between repeated error logs about rejected frames."""


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

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor the node declares."""
        d = ParameterDescriptor(name=self.name, type=self.type.value,
                                description=self.description,
                                additional_constraints=self.constraints,
                                read_only=not self.dynamic)
        if self.range is not None and self.type == Parameter.Type.INTEGER:
            d.integer_range = [IntegerRange(from_value=int(self.range[0]),
                                            to_value=int(self.range[1]), step=1)]
        elif self.range is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(self.range[0]),
                                                         to_value=float(self.range[1]), step=0.0)]
        return d


_T = Parameter.Type
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("weights", "", _T.STRING,
              "Checkpoint file (.pt) written by ssnet-train; empty uses the default weights "
              "shipped with the package."),
    ParamSpec("device", "auto", _T.STRING,
              "Inference device: auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
              constraints="auto | cpu | cuda | cuda:N"),
    ParamSpec("precision", "auto", _T.STRING,
              "Inference precision: auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16 (CUDA "
              "only) or bf16.", constraints=" | ".join(PRECISIONS)),
    ParamSpec("input_height", 0, _T.INTEGER,
              "Network input height in pixels: images are resized to input_height x "
              "input_width for inference and the results resized back; 0 (with input_width "
              "0) runs at each image's own size.", range=(0, 16384),
              constraints="0 or >= 1 together with input_width"),
    ParamSpec("input_width", 0, _T.INTEGER,
              "Network input width in pixels; 0 (with input_height 0) runs at each image's own "
              "size.", range=(0, 16384),
              constraints="0 or >= 1 together with input_height"),
    ParamSpec("drivable_classes", [], _T.STRING_ARRAY,
              "Class names counted as drivable in segmentation/drivable_mask; empty uses the "
              "checkpoint's list.", constraints="names from the class_names parameter"),
    ParamSpec("input_transport", "raw", _T.STRING,
              "raw subscribes to image (sensor_msgs/Image); compressed subscribes to "
              "image/compressed (sensor_msgs/CompressedImage).",
              constraints=" | ".join(TRANSPORTS)),
    ParamSpec("overlay_alpha", 0.5, _T.DOUBLE,
              "Weight of the class colours in segmentation/overlay (0 = camera image only, "
              "1 = colours only).", dynamic=True, range=(0.0, 1.0)),
    *(ParamSpec(f"publish_{key}", True, _T.BOOL,
                f"Publish {topic}; it is computed only while someone subscribes to it.",
                dynamic=True) for key, topic in OUTPUTS.items()),
    ParamSpec("diagnostics_period", 1.0, _T.DOUBLE,
              "Seconds between messages on /diagnostics.", range=(0.1, 60.0)),
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
    input_size: tuple[int, int] | None
    drivable_classes: tuple[str, ...] | None
    input_transport: str
    diagnostics_period: float
    overlay_alpha: float
    publish: dict[str, bool]


def validate(values: dict[str, Any]) -> Settings:
    """Check parameter values (name -> value) for consistency; raise SSNetError naming one."""
    device = str(values["device"])
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise SSNetError(f"parameter device is {device!r}; use auto, cpu, cuda or cuda:N")
    precision = str(values["precision"])
    if precision not in PRECISIONS:
        raise SSNetError(f"parameter precision is {precision!r}; use one of "
                         f"{', '.join(PRECISIONS)}")
    try:
        dev = resolve_device(device)
    except SSNetError as exc:
        raise SSNetError(f"parameter device: {exc}") from None
    try:
        resolve_precision(precision, dev)
    except SSNetError as exc:
        raise SSNetError(f"parameter precision: {exc}") from None
    transport = str(values["input_transport"])
    if transport not in TRANSPORTS:
        raise SSNetError(f"parameter input_transport is {transport!r}; use raw or compressed")
    h, w = int(values["input_height"]), int(values["input_width"])
    if (h == 0) != (w == 0):
        raise SSNetError(f"parameters input_height ({h}) and input_width ({w}) must both be 0 "
                         f"(native size) or both be positive")
    drivable = values["drivable_classes"] or None
    return Settings(
        weights=str(values["weights"]), device=device, precision=precision,
        input_size=(h, w) if h else None,
        drivable_classes=tuple(drivable) if drivable else None,
        input_transport=transport, diagnostics_period=float(values["diagnostics_period"]),
        overlay_alpha=float(values["overlay_alpha"]),
        publish={key: bool(values[f"publish_{key}"]) for key in OUTPUTS})


class SegmentationNode(Node):
    """Subscribes to camera images and publishes their semantic segmentation.

    Raises :class:`SSNetError` with one sentence when a parameter or the weights are unusable.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.settings = validate(self._declare_parameters())
        s = self.settings
        try:
            self.segmenter = Segmenter(s.weights or None, device=s.device,
                                       precision=s.precision, input_size=s.input_size,
                                       drivable_classes=s.drivable_classes)
        except SSNetError as exc:
            if s.drivable_classes and "drivable classes" in str(exc):
                raise SSNetError(f"parameter drivable_classes: {exc}") from None
            raise
        self._declare_derived_parameters()
        self._lut = palette_lut(self.segmenter.palette)
        self.add_on_set_parameters_callback(self._check_new_parameters)
        self.add_post_set_parameters_callback(self._apply_new_parameters)

        self.received, self.skipped, self.rejected = RateMeter(), Counter(), Counter()
        self.failed, self.idle, self.processed = Counter(), Counter(), RateMeter()
        self.published = {key: Counter() for key in OUTPUTS}
        self.latency = {stage: LatencyWindow() for stage in
                        ("conversion", "inference", "publishing", "total")}
        self._rejected_reported = 0
        self._last_error_log = -ERROR_LOG_PERIOD
        self._errors_suppressed = 0
        self._mailbox: Mailbox[tuple[Any, float]] = Mailbox()

        self._pubs = {key: self.create_publisher(Image, topic, OUTPUT_QOS)
                      for key, topic in OUTPUTS.items()}
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if s.input_transport == "raw":
            self.input_topic = self.resolve_topic_name("image")
            self._convert, self._check = image_to_rgb, check_image
            self.create_subscription(Image, self.input_topic, self._on_image, INPUT_QOS)
        else:
            self.input_topic = self._compressed_topic()
            self._convert, self._check = compressed_to_rgb, check_compressed
            self.create_subscription(CompressedImage, self.input_topic, self._on_image,
                                     INPUT_QOS)
        self.create_timer(s.diagnostics_period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="ssnet-worker", daemon=True)
        self._worker.start()
        size = "each image's own size" if s.input_size is None else \
            f"{s.input_size[0]}x{s.input_size[1]}"
        self.get_logger().info(
            f"segmenting {self.input_topic} ({s.input_transport}) with "
            f"{self.segmenter.weights} on {self.segmenter.device} "
            f"({str(self.segmenter.dtype).removeprefix('torch.')}), network input {size}")

    # -- parameters -------------------------------------------------------------------------

    def _declare_parameters(self) -> dict[str, Any]:
        values = {}
        for spec in PARAMETERS:
            default = spec.type if spec.default == [] else spec.default  # rclpy: typed empty
            try:
                param = self.declare_parameter(spec.name, default, spec.descriptor())
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
            values[spec.name] = [] if param.value is None else param.value
        return values

    def _declare_derived_parameters(self) -> None:
        seg = self.segmenter
        values = {"class_names": list(seg.class_names),
                  "palette": [int(v) for colour in seg.palette for v in colour],
                  "drivable_ids": [int(i) for i in seg.drivable_ids]}
        types = {"class_names": _T.STRING_ARRAY, "palette": _T.INTEGER_ARRAY,
                 "drivable_ids": _T.INTEGER_ARRAY}
        for name, description in DERIVED_PARAMETERS.items():
            descriptor = ParameterDescriptor(name=name, type=types[name].value, read_only=True,
                                             description=description)
            value = values[name] or types[name]  # an empty list stays unset (rclpy limit)
            self.declare_parameter(name, value, descriptor, ignore_override=True)

    def _check_new_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "overlay_alpha" and not 0.0 <= float(p.value) <= 1.0:
                return SetParametersResult(successful=False,
                                           reason=f"overlay_alpha {p.value} is outside 0..1")
        return SetParametersResult(successful=True)

    def _apply_new_parameters(self, params: list[Parameter]) -> None:
        s = self.settings
        publish, alpha = dict(s.publish), s.overlay_alpha
        for p in params:
            if p.name == "overlay_alpha":
                alpha = float(p.value)
            elif p.name.startswith("publish_") and p.name[8:] in OUTPUTS:
                publish[p.name[8:]] = bool(p.value)
        self.settings = dataclasses.replace(s, overlay_alpha=alpha, publish=publish)

    def _compressed_topic(self) -> str:
        """image/compressed, following remaps of ``image`` as image_transport does."""
        explicit = self.resolve_topic_name("image/compressed")
        if explicit != self.resolve_topic_name("image/compressed", only_expand=True):
            return explicit
        return self.resolve_topic_name("image") + "/compressed"

    # -- data path --------------------------------------------------------------------------

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self.received.tick(now)
        try:
            self._check(msg)
        except SSNetError as exc:
            self._reject(exc)
            return
        if self._mailbox.put((msg, now)):
            self.skipped.add()

    def _work(self) -> None:
        while (item := self._mailbox.take()) is not None:
            try:
                self._process(*item)
            except SSNetError as exc:
                self._reject(exc)
            except Exception as exc:  # keep serving; a closing node may see destroyed handles
                if self._mailbox.closed:
                    return
                self.failed.add()
                self._log_error(f"segmentation failed: {exc!r}")

    def _reject(self, exc: SSNetError) -> None:
        self.rejected.add()
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

    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        s = self.settings
        want = {key: s.publish[key] and pub.get_subscription_count() > 0
                for key, pub in self._pubs.items()}
        if not any(want.values()):
            self.idle.add()
            return
        t0 = time.perf_counter()
        rgb = self._convert(msg)
        t1 = time.perf_counter()
        result = self.segmenter(rgb, confidence=want["confidence"])
        t2 = time.perf_counter()
        header: Header = msg.header
        out: dict[str, Image] = {}
        if want["labels"]:
            out["labels"] = mono8_msg(result.labels, header)
        if want["drivable_mask"]:
            out["drivable_mask"] = mono8_msg(mask_to_mono8(result.drivable), header)
        if want["confidence"]:
            out["confidence"] = mono8_msg(confidence_to_mono8(result.confidence), header)
        if want["color"] or want["overlay"]:
            color = colorize(result.labels, self._lut)
            if want["color"]:
                out["color"] = rgb8_msg(color, header)
            if want["overlay"]:
                out["overlay"] = rgb8_msg(overlay(rgb, color, s.overlay_alpha), header)
        for key, image in out.items():
            self._pubs[key].publish(image)
            self.published[key].add()
        t3 = time.perf_counter()
        self.processed.tick()
        for stage, seconds in (("conversion", t1 - t0), ("inference", t2 - t1),
                               ("publishing", t3 - t2), ("total", time.monotonic() - received)):
            self.latency[stage].add(seconds)

    # -- diagnostics ------------------------------------------------------------------------

    def _status(self) -> DiagnosticStatus:
        """The node's health and statistics (rejections are counted as reported once)."""
        seg, s = self.segmenter, self.settings
        rate_in, rate_out = self.received.rate(), self.processed.rate()
        rejected = self.rejected.value
        new_rejects, self._rejected_reported = rejected - self._rejected_reported, rejected
        level, message = DiagnosticStatus.OK, f"{rate_in:.1f} Hz in, {rate_out:.1f} Hz out"
        if self.received.total == 0:
            message = f"waiting for images on {self.input_topic}"
        elif new_rejects:
            level, message = DiagnosticStatus.WARN, f"rejected {new_rejects} malformed images"
        elif self.failed.value:
            level, message = DiagnosticStatus.WARN, f"{self.failed.value} frames failed"
        values = {
            "input_rate_hz": f"{rate_in:.2f}", "output_rate_hz": f"{rate_out:.2f}",
            "frames_received": self.received.total, "frames_processed": self.processed.total,
            "frames_skipped": self.skipped.value, "frames_rejected": rejected,
            "frames_failed": self.failed.value, "frames_unwatched": self.idle.value,
        }
        for stage, window in self.latency.items():
            for q in (50, 99):
                values[f"{stage}_p{q}_ms"] = f"{window.percentile_ms(q):.2f}"
        values.update({f"published_{key}": c.value for key, c in self.published.items()})
        values.update({
            "input_topic": self.input_topic, "weights": str(seg.weights),
            "device": str(seg.device), "precision": str(seg.dtype).removeprefix("torch."),
            "network_input": "native" if s.input_size is None else
            f"{s.input_size[0]}x{s.input_size[1]}",
        })
        return DiagnosticStatus(level=level, name=status_name(self.get_fully_qualified_name()),
                                message=message, hardware_id=str(seg.device),
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    def _publish_diagnostics(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(DiagnosticArray(header=header, status=[self._status()]))

    # -- lifetime ---------------------------------------------------------------------------

    def close(self, timeout: float = 1.0) -> bool:
        """Stop the worker (waiting up to ``timeout`` s for a running frame) and destroy the
        node; False when the worker is still busy with a frame (it stops after it)."""
        self._mailbox.close()
        self._worker.join(timeout)
        finished = not self._worker.is_alive()
        if not finished:
            self.get_logger().warning("stopping while a frame is still being segmented")
        self.destroy_node()
        return finished


def status_name(fully_qualified_node_name: str) -> str:
    """The node's DiagnosticStatus name, e.g. ``front/ssnet: semantic segmentation``."""
    return f"{fully_qualified_node_name.lstrip('/')}: semantic segmentation"


def _reason(exc: ParameterException) -> str:
    """rclpy's message without its trailing ': <parameter name>'."""
    return str(exc).rsplit(": ", 1)[0]


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the node was starting (not an Exception, so that no
    ``except Exception`` on the way, e.g. around torch.load, mistakes it for an error)."""


def usage() -> str:
    """Command-line help listing the parameters."""
    lines = ["usage: segmentation_node [--ros-args -p NAME:=VALUE ... -r image:=TOPIC]", "",
             "parameters:"]
    for spec in PARAMETERS:
        default = spec.default if spec.default != "" else '""'
        lines.append(f"  {spec.name} ({spec.type.name.lower()}, default {default}): "
                     f"{spec.description}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT or SIGTERM; 0 on a clean stop, 1 when it cannot start."""
    args = list(sys.argv if argv is None else argv)
    user_args = remove_ros_args(args)[1:]
    if user_args in (["-h"], ["--help"]):
        print(usage())
        return 0
    if user_args:
        print(f"segmentation_node: unexpected arguments {user_args}; parameters go after "
              f"--ros-args as -p NAME:=VALUE (see --help)", file=sys.stderr)
        return 2
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # malformed --ros-args
        print(f"segmentation_node: cannot start: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    stop = threading.Event()
    ready = False

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        if not ready:
            raise _Interrupted

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    node: SegmentationNode | None = None
    code = 0
    try:
        node = SegmentationNode()
        ready = True
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown(timeout_sec=0.2)
    except SSNetError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        code = 1
    except _Interrupted:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        finished = node.close() if node is not None else True
        rclpy.try_shutdown()
    if not finished:
        # The worker is still inside the network; interpreter teardown would abort under it
        # ("terminate called without an active exception"), so leave without teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
