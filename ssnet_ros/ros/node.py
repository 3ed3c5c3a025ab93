"""The ssnet ROS 2 node: camera images in; labels, drivable mask, confidence, colour, overlay out.

Run it with ``ros2 run ssnet_ros segmentation_node --ros-args -p weights:=FILE`` or
``python -m ssnet_ros.node --ros-args ...``. docs/node.md documents topics,
parameters, QoS and diagnostics; docs/frame_pipeline.md how a frame walks through it.

The node is plumbing: subscriptions, parameters, batching and publishing. The work is ROS-free:
each message is checked and decoded by its transport (:mod:`ssnet_ros.core.decode`), each
camera's state (calibration, pose, grid lookup, trust) is a
:class:`~ssnet_ros.core.camera_pipeline.CameraPipeline`, and a batch goes through the one
:class:`~ssnet_ros.core.camera_pipeline.Pipeline` that ``ssnet-eval-bag`` runs too.

Threading: the subscription callback only checks the message and drops it into its camera's
one-slot mailbox (newest wins, replaced frames count as skipped); one worker thread takes the
frames of all cameras that arrived together (waiting at most batch_wait_ms for the others),
decodes them, segments them in one forward pass per image size and publishes. Nothing queues,
so output latency never grows.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import rclpy
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterNotDeclaredException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image, RelativeHumidity
from std_msgs.msg import Header

from . import declare
from .camera import Camera
from .conversions import MESSAGE_CLASSES, TRANSPORTS, calibration, camera_info_topic
from .diagnostics import camera_status, grid_trouble, started, status_name
from .parameters import OUTPUTS, PARAMETERS, camera_poses, \
    change_problem, updated, validate
from .poses import PoseSource
from .worker import SegmentationWorker
from .signals import STOP, Interrupted, caused_by_signal, die_with_parent
from ..core.camera_pipeline import Pipeline
from ..core.render import GRID_TOPIC, TRUST_TOPIC
from ..core.segmenter import Segmenter
from ..core.stats import Throttled
from ..errors import SSNetError

__all__ = ["GRID_TOPIC", "INPUT_QOS", "NODE_NAME", "OUTPUTS", "OUTPUT_QOS",
           "SegmentationBase", "SegmentationNode", "main", "status_name"]

NODE_NAME = "ssnet"
#: Input QoS: sensor data, newest only.
INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       history=HistoryPolicy.KEEP_LAST)
#: Output QoS: reliable, a short history.
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE,
                        history=HistoryPolicy.KEEP_LAST)
ERROR_LOG_PERIOD = 5.0
"""Seconds between repeated error logs about rejected frames."""


class SegmentationBase:
    """The segmentation node's behaviour, in phases both node kinds run (mixed into a Node):

    declare (parameters) -> load (validate them, load the weights) -> open outputs -> open
    inputs (subscriptions, worker, diagnostics timer); and back: close inputs (nothing queued is
    kept) -> close outputs -> unload. :class:`SegmentationNode` runs the first four in its
    constructor; :class:`~ssnet_ros.ros.lifecycle.SegmentationLifecycleNode` in its lifecycle
    transitions.
    """

    segmenter: Segmenter | None
    #: startup parameters may change while unconfigured (lifecycle node), never in the plain node
    STARTUP_PARAMETERS_WRITABLE = False

    def _init_state(self) -> None:
        self.segmenter = None
        self.pipeline: Pipeline | None = None
        self.cameras: list[Camera] = []
        self.callback_errors = 0
        """Exceptions raised inside executor callbacks (e.g. a peer's malformed request)."""
        self._log_error = Throttled(lambda text: self.get_logger().error(text),
                                    ERROR_LOG_PERIOD)
        self._worker: SegmentationWorker | None = None
        self._inputs: list[Any] = []
        self._timer = self._diagnostics = self._grid_pub = self._poses = None
        self._derived_declared = self._declaring = False
        given = getattr(self, "_parameter_overrides", {}).get("drivable_classes")
        self._drivable_given = bool(given is not None and given.value)
        """drivable_classes came from the user (else it holds the checkpoint's names)."""
        self.add_on_set_parameters_callback(self._check_new_parameters)
        self.add_post_set_parameters_callback(self._apply_new_parameters)

    def _declare_parameters(self) -> dict[str, Any]:
        self._declaring = True
        try:
            return declare.declare_all(self, self.STARTUP_PARAMETERS_WRITABLE)
        finally:
            self._declaring = False

    def _load(self, values: dict[str, Any]) -> None:
        """Validate ``values`` and load the weights; SSNetError with one sentence if unusable."""
        if not self._drivable_given:  # the checkpoint's own names (they may have changed)
            values = {**values, "drivable_classes": []}
        self.settings = s = validate(values)
        try:
            self.segmenter = Segmenter(s.weights or None, device=s.torch_device,
                                       precision=s.dtype, input_size=s.input_size,
                                       drivable_classes=s.drivable_classes,
                                       drivable_rule=s.drivable_rule)
        except SSNetError as exc:
            if s.drivable_classes and "drivable classes" in str(exc):
                raise SSNetError(f"parameter drivable_classes: {exc}") from None
            raise
        if not s.drivable_classes:  # hold the effective names, never "not set"
            declare.hold(self, Parameter("drivable_classes", Parameter.Type.STRING_ARRAY,
                                         list(self.segmenter.card.drivable_classes)))
        declare.declare_derived(self, self.segmenter, again=self._derived_declared)
        self._derived_declared = True

    def _open_outputs(self) -> None:
        s = self.settings
        poses = camera_poses(s) or [None] * max(1, len(s.cameras))
        self.cameras = [Camera(name, pose) for name, pose in zip(s.cameras or ("",), poses)]
        for cam in self.cameras:
            cam.pubs = {key: self.create_publisher(Image, cam.prefix + topic, OUTPUT_QOS)
                        for key, topic in OUTPUTS.items()}
            cam.trust_pub = self.create_publisher(RelativeHumidity, cam.prefix + TRUST_TOPIC,
                                                  OUTPUT_QOS)
        self._poses = PoseSource(self, s, self._log_error)
        self._grid_pub = self.create_publisher(OccupancyGrid, GRID_TOPIC, OUTPUT_QOS) \
            if self._poses.available else None
        self.pipeline = Pipeline(self.segmenter, s.grid)
        self._warmed: set[tuple[Any, ...]] = set()
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _open_inputs(self) -> None:
        s = self.settings
        kind = TRANSPORTS[s.input_transport]  # checked once in the callback, decoded once
        self._inputs = []
        for index, cam in enumerate(self.cameras):
            image = self.resolve_topic_name(cam.prefix + "image")
            cam.input_topic = transport_topic(self, cam.prefix + "image", kind.topic_suffix)
            cam.info_topic = camera_info_topic(image)
            self._inputs += [
                self.create_subscription(
                    MESSAGE_CLASSES[kind.msgtype], cam.input_topic,
                    lambda msg, i=index: self._worker.put(i, msg), INPUT_QOS),
                self.create_subscription(
                    CameraInfo, cam.info_topic, lambda msg, c=cam: self._on_camera_info(c, msg),
                    INPUT_QOS)]
        # a steady clock: diagnostics go on while a simulated /clock pauses
        self._timer = self.create_timer(s.diagnostics_period, self._publish_diagnostics,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = SegmentationWorker(self, self.cameras, self.pipeline, self._poses,
                                          self._grid_pub, self._grid_wanted, self._log_error)
        grid = self.resolve_topic_name(GRID_TOPIC) if self._grid_pub is not None else None
        for line in started(s, self.segmenter, self.cameras, grid):
            self.get_logger().info(line)

    def _close_inputs(self, timeout: float = 1.0) -> bool:
        """Stop taking frames: drop what waits, let the worker finish the frame in hand (up
        to ``timeout`` s); False when it is still busy (it stops after it)."""
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        finished = self._worker.stop(timeout) if self._worker is not None else True
        if not finished:
            self.get_logger().warning("stopping while a frame is still being segmented")
        self._worker = None
        return finished

    def _close_outputs(self) -> None:
        pubs = [p for cam in self.cameras for p in (*cam.pubs.values(), cam.trust_pub)]
        for pub in pubs + [self._diagnostics, self._grid_pub]:
            if pub is not None:
                self.destroy_publisher(pub)
        self._diagnostics = self._grid_pub = None
        if self._poses is not None:
            self._poses.close()
        self.cameras, self.pipeline = [], None

    def _unload(self) -> None:
        """Release the model (and the GPU memory it held)."""
        self.segmenter = self.pipeline = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- parameter changes ------------------------------------------------------------------

    def _check_undeclared_parameters(self, parameter_list: list[Parameter]) -> None:
        """rclpy's check, fixed: it names the undeclared parameters (rclpy consumes its
        generator and says ``[]``) and refuses an empty name (rclpy lets it through)."""
        declared = self._parameters  # type: ignore[attr-defined]
        undeclared = [p.name for p in parameter_list if not p.name or p.name not in declared]
        if undeclared:
            raise ParameterNotDeclaredException(undeclared)

    def _check_new_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            problem = change_problem(p.name, p.value, self.segmenter)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_new_parameters(self, params: list[Parameter]) -> None:
        if self.segmenter is None:  # not configured: read at the next configure
            if not self._declaring:
                self._drivable_given |= any(p.name == "drivable_classes" for p in params)
            return  # the worker applies the new settings from its next batch on
        self.settings = updated(self.settings, {p.name: p.value for p in params})

    # -- data path --------------------------------------------------------------------------

    def _on_camera_info(self, cam: Camera, msg: CameraInfo) -> None:
        before = cam.pipe.calibration_problem
        problem = cam.pipe.set_calibration(calibration(msg))
        if problem and problem != before:
            self.get_logger().warning(f"no drivable grid from {cam.info_topic}: its "
                                      f"camera_info is unusable: {problem}")
        if not problem and self.segmenter.cuda_graphs:
            self._warm_up(cam, msg.height, msg.width)

    def _warm_up(self, cam: Camera, height: int, width: int) -> None:
        """Capture the CUDA graph of this camera's frames (size from camera_info, focal
        length, the outputs wanted now) before the first frame comes, once per such key."""
        outputs = cam.wanted(self.settings.publish) | (
            {"drivable_mask"} if self._grid_wanted() else set())
        key = (height, width, cam.pipe.focal_px, frozenset(outputs))
        if outputs and key not in self._warmed:
            self._warmed.add(key)
            self.segmenter.warm_up(height, width, outputs=outputs, focal_px=cam.pipe.focal_px)

    def _grid_wanted(self) -> bool:
        pub = self._grid_pub
        return bool(self.settings.publish_grid and pub is not None
                    and pub.get_subscription_count() > 0)

    # -- diagnostics and lifetime -----------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        name, s = self.get_fully_qualified_name(), self.settings
        listened = self._grid_wanted()
        status = [camera_status(cam, self.segmenter, s, node_name=name,
                                grid=grid_trouble(cam, s, self._grid_pub is not None, listened),
                                callback_errors=self.callback_errors)
                  for cam in self.cameras]
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(DiagnosticArray(header=header, status=status))

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
        declare.warn_unknown_overrides(self)
        self._open_outputs()
        self._open_inputs()


_Interrupted = Interrupted


#: oneDNN (PyTorch's CPU kernels) caches compiled primitives per input shape, 1024 by default;
#: a node that sees many image sizes grew by 850 MB over 250 sizes. 128 holds the primitives of
#: about five image sizes of SSNet; raise it (same variables) for more cameras of other sizes.
CPU_KERNEL_CACHE = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "128"}


def transport_topic(node: Node, image: str, suffix: str) -> str:
    """``image`` + a transport's suffix, following remaps of ``image`` as image_transport does
    (an explicit remap of e.g. image/compressed wins)."""
    if not suffix:
        return node.resolve_topic_name(image)
    explicit = node.resolve_topic_name(image + suffix)
    if explicit != node.resolve_topic_name(image + suffix, only_expand=True):
        return explicit
    return node.resolve_topic_name(image) + suffix


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
            if caused_by_signal(exc):  # a signal's Interrupted, wrapped by Python on its way
                raise _Interrupted from None
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
