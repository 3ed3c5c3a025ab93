"""Bag messages (rosbags dataclasses and raw CDR) <-> numpy arrays.

Pixels are decoded by :mod:`ssnet_ros.core.decode`, the node's own decoder, so a frame read from
a bag passes the same validation and gives the same RGB array as one the node receives
(rosbags' Image and CompressedImage carry the same fields as the rclpy messages).
"""

from __future__ import annotations

import dataclasses
import struct
from functools import lru_cache
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from ..core.camera_pipeline import Calibration
from ..core.decode import BY_MSGTYPE, check_raw
from ..core.decode import to_rgb as _decode
from ..errors import SSNetError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
OCCUPANCY_GRID = "nav_msgs/msg/OccupancyGrid"
#: Encodings accepted for ground-truth label images (one uint8 class id per pixel).
LABEL_ENCODINGS = ("mono8", "8UC1")
_STAMP = struct.Struct("<iI")
_CDR_LE = (b"\x00\x01", b"\x00\x03")  # CDR / PL_CDR little endian
_CDR_BE = (b"\x00\x00", b"\x00\x02")


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The ROS 2 Jazzy message types (sensor_msgs, std_msgs, ...) used to (de)serialize."""
    return get_typestore(Stores.ROS2_JAZZY)


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    """A CDR-serialized message as a rosbags dataclass; SSNetError when it does not decode."""
    try:
        return typestore().deserialize_cdr(raw, msgtype)
    except Exception as exc:  # noqa: BLE001 - rosbags raises assorted errors on bad bytes
        raise SSNetError(f"a {msgtype} message ({len(raw)} bytes) does not decode: "
                         f"{exc}") from None


def serialize(msg: Any) -> memoryview:
    """A rosbags message dataclass as little-endian CDR bytes."""
    return typestore().serialize_cdr(msg, msg.__msgtype__)


def to_rgb(msg: Any) -> np.ndarray:
    """HxWx3 uint8 RGB of a bag Image or CompressedImage (SSNetError when malformed)."""
    kind = BY_MSGTYPE.get(msg.__msgtype__)
    if kind is None:
        raise SSNetError(f"a {msg.__msgtype__} message is not an image")
    return _decode(msg, kind)


def to_labels(msg: Any) -> np.ndarray:
    """HxW uint8 class ids of a mono8 (or 8UC1) label Image (SSNetError when malformed)."""
    if msg.__msgtype__ != IMAGE or msg.encoding not in LABEL_ENCODINGS:
        kind = msg.__msgtype__ if msg.__msgtype__ != IMAGE else f"{msg.encoding} image"
        raise SSNetError(f"a label message must be a mono8 Image, got a {kind}")
    if msg.encoding == "8UC1":  # same layout; validate it as mono8
        msg = dataclasses.replace(msg, encoding="mono8")
    check_raw(msg)
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * msg.height)
    return rows.reshape(msg.height, msg.step)[:, :msg.width]


def header(stamp_ns: int, frame_id: str) -> Any:
    """A std_msgs/Header with ``stamp_ns`` nanoseconds since the epoch."""
    t = typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec,
                                                                         nanosec=nanosec),
                                    frame_id=frame_id)


def stamp_ns(hdr: Any) -> int:
    """A header's stamp in nanoseconds."""
    return int(hdr.stamp.sec) * 1_000_000_000 + int(hdr.stamp.nanosec)


def image(pixels: np.ndarray, hdr: Any) -> Any:
    """A bag Image of HxW (mono8) or HxWx3 (rgb8) uint8 pixels carrying ``hdr``."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or \
            (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"need HxW or HxWx3 uint8 pixels, got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    return typestore().types[IMAGE](
        header=hdr, height=h, width=w, encoding="mono8" if channels == 1 else "rgb8",
        is_bigendian=0, step=w * channels, data=np.ascontiguousarray(pixels).reshape(-1))


def camera_info(hdr: Any, width: int, height: int, fx: float, fy: float, cx: float,
                cy: float) -> Any:
    """A bag CameraInfo of a pinhole camera (no distortion) carrying ``hdr``."""
    t = typestore().types
    k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
    p = np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                do_rectify=False)
    return t[CAMERA_INFO](header=hdr, height=int(height), width=int(width),
                          distortion_model="plumb_bob", d=np.zeros(5), k=k, r=np.eye(3).ravel(),
                          p=p, binning_x=0, binning_y=0, roi=roi)


def occupancy_grid(data: np.ndarray, grid: Any, hdr: Any) -> Any:
    """A bag nav_msgs/OccupancyGrid of ``data`` (grid height x width int8) over ``grid`` (a
    :class:`ssnet_ros.core.ground_grid.GridSpec`), identity orientation, carrying ``hdr``."""
    t = typestore().types
    point = t["geometry_msgs/msg/Point"](x=float(grid.x_range[0]), y=float(grid.y_range[0]),
                                        z=0.0)
    quat = t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    info = t["nav_msgs/msg/MapMetaData"](
        map_load_time=hdr.stamp, resolution=float(grid.resolution), width=int(grid.width),
        height=int(grid.height), origin=t["geometry_msgs/msg/Pose"](position=point,
                                                                    orientation=quat))
    return t[OCCUPANCY_GRID](header=hdr, info=info,
                             data=np.ascontiguousarray(data, np.int8).reshape(-1))


def to_calibration(msg: Any) -> Calibration:
    """The pinhole model of a bag CameraInfo (checked by its ``problem``)."""
    return Calibration(tuple(float(v) for v in msg.k), int(msg.width), int(msg.height),
                       tuple(float(v) for v in msg.d), str(msg.distortion_model))


def compressed(pixels: np.ndarray, hdr: Any, fmt: str = "jpeg", quality: int = 95) -> Any:
    """A bag CompressedImage (jpeg or png) of HxWx3 RGB pixels carrying ``hdr``."""
    import cv2

    if fmt not in ("jpeg", "png"):
        raise ValueError(f"compressed format must be jpeg or png, not {fmt}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise SSNetError(f"could not encode a {pixels.shape[1]}x{pixels.shape[0]} image as {fmt}")
    return typestore().types[COMPRESSED](header=hdr, format=f"rgb8; {fmt} compressed bgr8",
                                         data=buf.reshape(-1))


def _stamp_offset(raw: bytes | memoryview) -> tuple[int, bool]:
    kind = bytes(raw[:2])
    if len(raw) < 12 or kind not in _CDR_LE + _CDR_BE:
        raise SSNetError(f"{len(raw)} bytes are not a CDR message starting with a header")
    return 4, kind in _CDR_LE


def cdr_stamp(raw: bytes | memoryview) -> tuple[int, int]:
    """(sec, nanosec) of the header that begins a CDR message, read without decoding it."""
    offset, little = _stamp_offset(raw)
    fmt = _STAMP if little else struct.Struct(">iI")
    sec, nanosec = fmt.unpack_from(raw, offset)
    return int(sec), int(nanosec)


def with_stamp(raw: bytes | memoryview, stamp: int) -> bytes:
    """A copy of a CDR message (starting with a header) with its stamp set to ``stamp`` ns."""
    offset, little = _stamp_offset(raw)
    out = bytearray(raw)
    sec, nanosec = divmod(int(stamp), 1_000_000_000)
    (_STAMP if little else struct.Struct(">iI")).pack_into(out, offset, sec, nanosec)
    return bytes(out)
