"""Image messages -> HxWx3 uint8 RGB, without ROS: the node's and the bag tools' one decoder.

A message is a sensor_msgs Image or CompressedImage as rclpy or rosbags gives it (the same
fields). Each input transport is one entry of :data:`TRANSPORTS`: a cheap ``check`` (encoding
or format, size, lengths; no pixel read) that a subscription callback can run, and a ``decode``
of a message that ``check`` passed, which checks nothing again. :func:`to_rgb` does both, once.
Anything malformed raises :class:`SSNetError` saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import SSNetError
from .image_limits import check_compressed_data, check_size, decode_checked

#: Supported raw encodings and their channel counts (all 8 bits per channel).
CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
           "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB}


def shorten(text: str, limit: int = 40) -> str:
    """``text`` quoted for a log line: at most ``limit`` characters of it, and its length."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_raw(msg: Any) -> int:
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


def decode_raw(msg: Any, channels: int) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of a raw image that :func:`check_raw` passed (``channels``: what
    it returned). Row padding is honoured; unpadded rgb8 gives a view of ``msg.data`` (no
    copy), every other case one conversion pass."""
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


def _what(msg: Any) -> str:
    fmt = msg.format
    return f"compressed image ({(fmt[:40] + '...') if len(fmt) > 40 else (fmt or 'no format')})"


def check_compressed(msg: Any) -> tuple[int, int]:
    """Cheap validation of a compressed image: length, PNG/JPEG header and the size it states
    (no pixel is decoded; see :mod:`ssnet_ros.core.image_limits`); return (height, width)."""
    try:
        return check_compressed_data(_bytes(msg.data))
    except SSNetError as exc:
        raise SSNetError(f"{_what(msg)}: {exc}") from None


def decode_compressed(msg: Any, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 RGB of a compressed image that :func:`check_compressed` passed (``size``:
    the (height, width) it returned)."""
    return decode_checked(_bytes(msg.data), size[0], size[1], _what(msg))


@dataclass(frozen=True)
class Transport:
    """One input transport: how its messages are checked and decoded, and where they come."""

    name: str
    msgtype: str
    """The message type, as bags name it (sensor_msgs/msg/Image, ...)."""
    topic_suffix: str
    """Appended to the camera's image topic, as image_transport names it ("/compressed")."""
    check: Callable[[Any], Any]
    """Cheap validation; returns what ``decode`` needs (raises SSNetError)."""
    decode: Callable[[Any, Any], np.ndarray]
    """(message, what ``check`` returned) -> HxWx3 uint8 RGB; checks nothing again."""


TRANSPORTS: dict[str, Transport] = {
    "raw": Transport("raw", "sensor_msgs/msg/Image", "", check_raw, decode_raw),
    "compressed": Transport("compressed", "sensor_msgs/msg/CompressedImage", "/compressed",
                            check_compressed, decode_compressed),
}
"""The input transports by name (the node's input_transport parameter)."""
BY_MSGTYPE = {t.msgtype: t for t in TRANSPORTS.values()}


def transport(name: str) -> Transport:
    """The transport called ``name``; SSNetError naming the others otherwise."""
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise SSNetError(f"input transport {name!r} is not one of "
                         f"{', '.join(TRANSPORTS)}") from None


def to_rgb(msg: Any, kind: Transport) -> np.ndarray:
    """Check then decode one message of transport ``kind``: HxWx3 uint8 RGB."""
    return kind.decode(msg, kind.check(msg))


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic beside a resolved image topic, as image_transport's camera
    subscriber reads it: ``/cam/image_raw`` -> ``/cam/camera_info``."""
    base = image_topic.rsplit("/", 1)[0] if "/" in image_topic else ""
    return f"{base}/camera_info" if base else "/camera_info"
