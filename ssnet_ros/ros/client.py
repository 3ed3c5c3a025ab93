"""Driving the ssnet node from another process: start it, send images, collect its outputs.

Used by the demo, the node benchmark and the tests; everything goes through real DDS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from .conversions import rgb8_msg
from ..errors import SSNetError
from .node import INPUT_QOS, NODE_NAME, OUTPUTS, status_name

PACKAGE = "ssnet_ros"
PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
StampKey = tuple[int, int]
PROBE_FRAME = "ssnet_client_probe"
"""frame_id of the images :meth:`SegmentationClient.wait_for_node` sends (outputs ignored)."""


def share_file(relative: str) -> Path:
    """A file the package installs under share/ssnet_ros (or its source-tree copy)."""
    candidates = [Path(__file__).resolve().parents[2] / relative,
                  Path(sys.prefix) / "share" / PACKAGE / relative]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(1, Path(get_package_share_directory(PACKAGE)) / relative)
    except (ImportError, LookupError, OSError, ValueError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise SSNetError(f"{relative} is not installed with {PACKAGE} (looked in "
                     f"{', '.join(str(p.parent) for p in candidates)})")


def use_large_image_profile() -> str:
    """Point Fast DDS at config/fastdds_large_images.xml unless the user chose a profile.

    Call before rclpy.init(); returns the profile in effect for this process and its children.
    """
    if not os.environ.get(PROFILE_ENV):
        os.environ[PROFILE_ENV] = str(share_file("config/fastdds_large_images.xml"))
    return os.environ[PROFILE_ENV]


NODE_MODULE = "ssnet_ros.node"
LIFECYCLE_MODULE = "ssnet_ros.lifecycle_node"


def node_command(params: Mapping[str, Any], remaps: Mapping[str, str] | None = None,
                 module: str = NODE_MODULE) -> list[str]:
    """The command line running the node (``module``: the plain or the lifecycle node) with
    ``params`` and topic ``remaps``."""
    cmd = [sys.executable, "-m", module, "--ros-args"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={_param_text(value)}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def _param_text(value: Any) -> str:
    """A value as ROS 2 command-line YAML (strings quoted: a path like "1.pt" or "yes" stays
    a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_param_text(v) for v in value) + "]"
    return str(value)


def start_node(params: Mapping[str, Any], remaps: Mapping[str, str] | None = None, *,
               env: Mapping[str, str] | None = None, module: str = NODE_MODULE,
               **popen: Any) -> subprocess.Popen:
    """Start the node in its own process (stdout and stderr default to pipes)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.STDOUT)
    return subprocess.Popen(node_command(params, remaps, module), env=dict(env or os.environ),
                            text=True, **popen)


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT the node and wait for it; kill it if it does not stop in ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def stamp_key(header: Header) -> StampKey:
    """A header's stamp as a hashable (sec, nanosec) pair."""
    return header.stamp.sec, header.stamp.nanosec


class SegmentationClient:
    """A node publishing images to the ssnet node and collecting its outputs by stamp.

    ``outputs`` names the outputs to subscribe to (keys of
    :data:`ssnet_ros.ros.parameters.OUTPUTS`);
    ``namespace`` is the ssnet node's namespace, ``node_name`` its name, ``camera`` one of its
    ``cameras`` ("" for a single-camera node: topics image and segmentation/*). The latest
    /diagnostics values of that node (and camera) are kept in :attr:`diagnostics` (key ->
    text). Images go out best-effort with ``publisher_depth`` (1 as a camera driver would).
    """

    def __init__(self, context: Context, *, outputs: Iterable[str] = OUTPUTS,
                 namespace: str = "/", image_topic: str = "image",
                 compressed: bool = False, name: str = "ssnet_client",
                 node_name: str = NODE_NAME, publisher_depth: int = 1,
                 on_output: Callable[[str, Image], None] | None = None,
                 camera: str = "") -> None:
        self.prefix = f"{camera}/" if camera else ""
        self.node = Node(name, namespace=namespace, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        msg_type = CompressedImage if compressed else Image
        if image_topic == "image":
            image_topic = self.prefix + image_topic
        topic = f"{image_topic}/compressed" if compressed else image_topic
        qos = INPUT_QOS if publisher_depth == 1 else QoSProfile(
            depth=publisher_depth, reliability=ReliabilityPolicy.BEST_EFFORT,
            history=HistoryPolicy.KEEP_LAST)
        self.publisher = self.node.create_publisher(msg_type, topic, qos)
        self.received: dict[StampKey, dict[str, Image]] = {}
        self.counts = dict.fromkeys(OUTPUTS, 0)
        self._probes_answered: set[StampKey] = set()
        self._on_output = on_output
        self._qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                               history=HistoryPolicy.KEEP_LAST)
        self.subscriptions: dict[str, Any] = {}
        for key in outputs:
            self.subscribe(key)
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_count = 0
        self._status_name = status_name(f"{namespace.rstrip('/')}/{node_name}", camera)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def subscribe(self, key: str) -> None:
        """Start receiving output ``key`` (a key of :data:`ssnet_ros.ros.parameters.OUTPUTS`)."""
        self.subscriptions[key] = self.node.create_subscription(
            Image, self.prefix + OUTPUTS[key], lambda msg: self._store(key, msg), self._qos)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self._status_name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics["level"] = str(status.level[0])  # a one-byte bytes
                self.diagnostics["message"] = status.message
                self.diagnostics_count += 1

    def _store(self, key: str, msg: Image) -> None:
        if msg.header.frame_id == PROBE_FRAME:
            self._probes_answered.add(stamp_key(msg.header))
            return
        self.counts[key] += 1
        if self._on_output is not None:
            self._on_output(key, msg)
        else:
            self.received.setdefault(stamp_key(msg.header), {})[key] = msg

    def spin_until(self, condition: Callable[[], bool], timeout: float,
                   proc: subprocess.Popen | None = None) -> bool:
        """Spin until ``condition()`` holds (True) or ``timeout`` s pass or ``proc`` exits."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                return condition()
            self.executor.spin_once(timeout_sec=0.02)
        return True

    def wait_for_node(self, timeout: float, proc: subprocess.Popen | None = None) -> bool:
        """Wait until the ssnet node answers: discovery both ways, then probe images.

        A match seen from one side may not yet be seen from the other, so probes (64x64
        black, frame_id :data:`PROBE_FRAME`) are sent until an output comes back; outputs of
        probes are not stored or counted.
        """
        deadline = time.monotonic() + timeout
        if not self.spin_until(
                lambda: self.publisher.get_subscription_count() > 0 and all(
                    sub.get_publisher_count() > 0 for sub in self.subscriptions.values()),
                timeout, proc):
            return False
        probe = np.zeros((64, 64, 3), np.uint8)
        wait = 1.0
        for n in range(1, 1_000_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (proc is not None and proc.poll() is not None):
                return False
            msg = image_msg(probe, n, PROBE_FRAME)
            if self.publisher.msg_type is CompressedImage:
                msg = compress(probe, msg.header)
            self.send(msg)
            # Any answered probe will do: a slow first inference may outlast several probes.
            if self.spin_until(lambda: bool(self._probes_answered), min(remaining, wait), proc):
                return True
            wait = min(2 * wait, 30.0)
        return False

    def send(self, msg: Image | CompressedImage) -> None:
        """Publish one input message."""
        self.publisher.publish(msg)

    def wait_outputs(self, header: Header, keys: Iterable[str] | None = None,
                     timeout: float = 30.0, proc: subprocess.Popen | None = None
                     ) -> dict[str, Image] | None:
        """The outputs stamped like ``header`` once all ``keys`` arrived (None on timeout)."""
        keys = tuple(self.subscriptions if keys is None else keys)
        key = stamp_key(header)
        ok = self.spin_until(lambda: all(k in self.received.get(key, {}) for k in keys),
                             timeout, proc)
        return self.received.pop(key) if ok else None

    def close(self) -> None:
        """Destroy the client node."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", *,
              encoding: str = "rgb8") -> Image:
    """An Image (rgb8 or bgr8) of an HxWx3 RGB array with the given stamp and frame_id."""
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    if encoding == "rgb8":
        return rgb8_msg(rgb, header)
    if encoding == "bgr8":
        msg = rgb8_msg(np.ascontiguousarray(rgb[:, :, ::-1]), header)
        msg.encoding = "bgr8"
        return msg
    raise ValueError(f"image_msg makes rgb8 or bgr8 images, not {encoding}")


def compress(rgb: np.ndarray, header: Header, fmt: str = "png") -> CompressedImage:
    """A CompressedImage (png or jpeg) of an HxWx3 RGB array carrying ``header``."""
    import cv2

    ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode as {fmt}")
    return CompressedImage(header=header, format=fmt, data=buf.tobytes())
