"""sensor_msgs images <-> numpy arrays, without cv_bridge.

Incoming messages are validated before use: anything malformed raises :class:`SSNetError` with a
message saying what is wrong, so a node can reject the frame and carry on.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..errors import SSNetError
from ..core.image_limits import MAX_SIDE, check_compressed_data, check_size, decode_image

#: Supported raw encodings and their channel counts (all 8 bits per channel).
CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
           "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB}


__all__ = ["CHANNELS", "MAX_SIDE", "check_compressed", "check_image", "compressed_to_rgb",
           "image_to_rgb", "mono8_msg", "rgb8_msg"]


def shorten(text: str, limit: int = 40) -> str:
    """``text`` quoted for a log line: at most ``limit`` characters of it, and its length."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_image(msg: Image) -> int:
    """Validate a raw image's encoding, size, step and data length; return its channel count.

    Cheap (no pixel is read), so it can run in a subscription callback.
    """
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise SSNetError(f"unsupported image encoding {shorten(msg.encoding)} "
                         f"(supported: {', '.join(CHANNELS)})")
    check_size(msg.height, msg.width)
    row = msg.width * channels
    if msg.step < row:
        raise SSNetError(f"image step {msg.step} is less than width x channels = {row}")
    if len(msg.data) < msg.step * msg.height:
        raise SSNetError(f"image data has {len(msg.data)} bytes, step x height needs "
                         f"{msg.step * msg.height}")
    return channels


def image_to_rgb(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of a raw image (rgb8, bgr8, rgba8, bgra8 or mono8).

    Row padding (``step`` > width x channels) is honoured. For unpadded rgb8 the result is a
    view of ``msg.data`` (no copy); every other case costs one conversion pass.
    """
    channels = check_image(msg)
    h, w = msg.height, msg.width
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * h).reshape(h, msg.step)
    pixels = rows[:, :w * channels].reshape(h, w, channels)
    if msg.encoding == "rgb8":
        return pixels
    if channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(pixels, _TO_RGB[msg.encoding])


def _bytes(data: object) -> bytes | memoryview:
    return data if isinstance(data, (bytes, memoryview)) else memoryview(data)  # type: ignore


def check_compressed(msg: CompressedImage) -> None:
    """Cheap validation of a compressed image: length, PNG/JPEG header and the size it
    states (no pixel is decoded; see :mod:`ssnet_ros.core.image_limits`)."""
    try:
        check_compressed_data(_bytes(msg.data))
    except SSNetError as exc:
        raise SSNetError(f"compressed image ({_format(msg)}): {exc}") from None


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a PNG or JPEG compressed image to HxWx3 uint8 RGB, size checked first."""
    return decode_image(_bytes(msg.data), f"compressed image ({_format(msg)})")


def _format(msg: CompressedImage) -> str:
    return (msg.format[:40] + "...") if len(msg.format) > 40 else (msg.format or "no format")


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
