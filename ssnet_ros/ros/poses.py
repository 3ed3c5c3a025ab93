"""Where the node's cameras' poses come from: the camera_pose parameter, else TF (tf2_ros, at
each image's stamp); neither means no drivable grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from std_msgs.msg import Header

from ..core.ground_grid import pose_from_optical
from .parameters import Settings


class PoseSource:
    """Each camera's pose in grid_frame. ``available`` is False (said once in the log) when
    the node has a grid but neither camera_pose nor tf2_ros; ``log_error`` takes the
    (throttled) message of a failed TF lookup."""

    def __init__(self, node: Any, settings: Settings, log_error: Callable[[str], None]) -> None:
        self.frame = settings.grid_frame
        self._log_error = log_error
        self._buffer: Any = None
        self._listener: Any = None
        self.available = settings.grid is not None
        if not self.available or settings.camera_pose:
            return
        try:
            import tf2_ros
        except ImportError:
            node.get_logger().info(
                "no segmentation/drivable_grid: camera_pose is empty and tf2_ros is not "
                "importable here, so there is no camera pose (set camera_pose)")
            self.available = False
            return
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)
        node.get_logger().info(f"drivable grid: camera poses from TF ({self.frame} -> each "
                               f"image's frame_id)")

    def at(self, header: Header, topic: str) -> tuple[float, ...] | None:
        """The pose of the camera of an image (``header``, from ``topic``) from TF at its
        stamp; None (logged) without TF or without that transform."""
        if self._buffer is None:
            return None
        from rclpy.time import Time

        try:
            tf = self._buffer.lookup_transform(self.frame, header.frame_id,
                                               Time.from_msg(header.stamp))
        except Exception as exc:  # noqa: BLE001 - tf2 raises several lookup exceptions
            self._log_error(f"no drivable grid from {topic}: no transform {self.frame} -> "
                            f"{header.frame_id!r}: {exc}")
            return None
        t, q = tf.transform.translation, tf.transform.rotation
        return pose_from_optical((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))

    def close(self) -> None:
        """Stop listening to TF."""
        self._buffer = self._listener = None
