"""sensor_msgs images <-> numpy arrays, without cv_bridge.

Incoming messages are checked and decoded by :mod:`ssnet_ros.core.decode` (the bag tools use
the same): anything malformed raises :class:`SSNetError` with a message saying what is wrong,
so a node can reject the frame and carry on.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.decode import CHANNELS, TRANSPORTS, check_compressed, to_rgb
from ..core.decode import check_raw as check_image
from ..core.image_limits import MAX_SIDE

__all__ = ["CHANNELS", "MAX_SIDE", "TRANSPORTS", "check_compressed", "check_image",
           "compressed_to_rgb", "image_to_rgb", "mono8_msg", "rgb8_msg"]


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


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic beside a resolved image topic, as image_transport's camera
    subscriber reads it: ``/cam/image_raw`` -> ``/cam/camera_info``."""
    base = image_topic.rsplit("/", 1)[0] if "/" in image_topic else ""
    return f"{base}/camera_info" if base else "/camera_info"
