"""sensor_msgs images <-> numpy arrays, without cv_bridge.

Incoming messages are checked and decoded by :mod:`ssnet_ros.core.decode` (the bag tools use
the same): anything malformed raises :class:`SSNetError` with a message saying what is wrong,
so a node can reject the frame and carry on.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..core.camera_pipeline import Calibration
from ..core.decode import CHANNELS, TRANSPORTS, camera_info_topic, check_compressed, \
    to_rgb
from ..core.ground_grid import GridSpec
from ..core.decode import check_raw as check_image
from ..core.image_limits import MAX_SIDE

__all__ = ["CHANNELS", "MAX_SIDE", "MESSAGE_CLASSES", "TRANSPORTS", "calibration",
           "camera_info_topic", "check_compressed", "check_image", "compressed_to_rgb",
           "grid_msg", "image_to_rgb", "mono8_msg", "rgb8_msg", "stamp_ns"]


#: The rclpy class of each transport's message type (core.decode names them as bags do).
MESSAGE_CLASSES: dict[str, type] = {"sensor_msgs/msg/Image": Image,
                                    "sensor_msgs/msg/CompressedImage": CompressedImage}


def image_to_rgb(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of a raw image (rgb8, bgr8, rgba8, bgra8 or mono8), checked
    once (:func:`ssnet_ros.core.decode.check_raw`).

    Row padding (``step`` > width x channels) is honoured. For unpadded rgb8 the result is a
    view of ``msg.data`` (no copy); every other case costs one conversion pass.
    """
    return to_rgb(msg, TRANSPORTS["raw"])


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a PNG or JPEG compressed image to HxWx3 uint8 RGB, size checked first."""
    return to_rgb(msg, TRANSPORTS["compressed"])


def _data(pixels: np.ndarray) -> array.array:
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).data)  # one copy, no Python loop
    return data


def mono8_msg(pixels: np.ndarray, header: Header) -> Image:
    """A mono8 Image of an HxW uint8 array, carrying ``header`` unchanged."""
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"mono8 needs an HxW uint8 array, got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape
    return Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w,
                 data=_data(pixels))


def rgb8_msg(pixels: np.ndarray, header: Header) -> Image:
    """An rgb8 Image of an HxWx3 uint8 array, carrying ``header`` unchanged."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"rgb8 needs an HxWx3 uint8 array, got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape[:2]
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                 data=_data(pixels))


def calibration(msg: CameraInfo) -> Calibration:
    """The pinhole model of a camera_info message (checked by its ``problem``)."""
    return Calibration(tuple(float(v) for v in msg.k), int(msg.width), int(msg.height),
                       tuple(float(v) for v in msg.d), str(msg.distortion_model))


def stamp_ns(header: Header) -> int:
    """A header's stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def grid_msg(data: np.ndarray, grid: GridSpec, frame_id: str, stamp: int) -> OccupancyGrid:
    """An OccupancyGrid of ``data`` (grid height x width int8) over ``grid``'s cells in
    ``frame_id``, stamped ``stamp`` (ns), its origin at the cells' minimum corner."""
    when = Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
    msg = OccupancyGrid()
    msg.header = Header(stamp=when, frame_id=frame_id)
    msg.info.map_load_time = when
    msg.info.resolution = float(grid.resolution)
    msg.info.width, msg.info.height = grid.width, grid.height
    msg.info.origin.position.x, msg.info.origin.position.y = grid.x_range[0], grid.y_range[0]
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", data.reshape(-1).tobytes())
    return msg
