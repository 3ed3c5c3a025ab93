"""The largest images ssnet_ros accepts, and decoding that checks them *before* decoding.

A compressed image states its size in a few header bytes; a 100 KB PNG can claim 30000x30000
pixels (2.7 GB decoded). Every compressed frame the node, the bag tools and the dataset readers
decode goes through :func:`decode_image`, which reads the size from the PNG or JPEG header and
refuses it before a byte of pixels is allocated. Bounds:

- at most :data:`MAX_SIDE` pixels a side and :data:`MAX_PIXELS` pixels in all (4096x4096 =
  16.8 MP: 12 MP car cameras pass; the decoded RGB frame is then at most 50 MB);
- compressed data of at most :data:`MAX_COMPRESSED_BYTES`;
- compressed images must be PNG or JPEG (the formats of sensor_msgs/CompressedImage);
- EXIF orientation is ignored: labels stay aligned with the pixels as the camera sent them;
- a JPEG whose data ends before the picture its header states (libjpeg then says "Corrupt
  JPEG data" or "Premature end of JPEG file" on stderr and fills the rest) is refused: such a
  header can claim 4000x4000 over 640x480 data. OpenCV gives no other access to libjpeg's
  warnings, so the decoder's stderr is read during the decode (:func:`_decode_jpeg`).
"""

from __future__ import annotations

import os
import struct
import sys
import threading

import cv2
import numpy as np

from ..errors import SSNetError

MAX_SIDE = 16384
MAX_PIXELS = 4096 * 4096
MAX_COMPRESSED_BYTES = 64 * 1024 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def check_size(height: int, width: int) -> None:
    """Raise SSNetError unless ``width`` x ``height`` is within the accepted bounds."""
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise SSNetError(f"image size {width}x{height} is outside 1..{MAX_SIDE} pixels per side")
    if height * width > MAX_PIXELS:
        raise SSNetError(f"image size {width}x{height} ({height * width:,} pixels) exceeds "
                         f"the limit of {MAX_PIXELS:,} pixels (4096x4096)")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise SSNetError("JPEG data is corrupt (no marker where one is expected)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return height, width
        if length < 2:
            raise SSNetError("JPEG data is corrupt (segment length below 2)")
        i += 2 + length
    raise SSNetError("JPEG data has no frame header (truncated or not an image)")


def is_png_or_jpeg(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` starts like a PNG or a JPEG file."""
    return bytes(data[:8]) == _PNG or bytes(data[:2]) == b"\xff\xd8"


def compressed_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(height, width) stated in a PNG or JPEG header, without decoding; SSNetError else."""
    head = bytes(data[:65536]) if len(data) > 65536 else bytes(data)
    if head.startswith(_PNG):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise SSNetError("PNG data is truncated before its IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        return height, width
    if head.startswith(b"\xff\xd8"):
        try:
            return _jpeg_size(head)
        except SSNetError:
            if len(data) > len(head):  # the frame header may follow large EXIF/ICC segments
                return _jpeg_size(bytes(data))
            raise
    raise SSNetError("compressed data is neither PNG nor JPEG")


def check_compressed_data(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Validate compressed data's length, format and stated size; return (height, width)."""
    if len(data) == 0:
        raise SSNetError("compressed image has no data")
    if len(data) > MAX_COMPRESSED_BYTES:
        raise SSNetError(f"compressed image has {len(data)} bytes, more than the limit of "
                         f"{MAX_COMPRESSED_BYTES}")
    height, width = compressed_size(data)
    check_size(height, width)
    return height, width


def decode_image(data: bytes | bytearray | memoryview, what: str = "compressed image"
                 ) -> np.ndarray:
    """Decode PNG or JPEG data to HxWx3 uint8 RGB after checking its header (module doc)."""
    try:
        height, width = check_compressed_data(data)
    except SSNetError as exc:
        raise SSNetError(f"{what}: {exc}") from None
    return decode_checked(data, height, width, what)


def decode_checked(data: bytes | bytearray | memoryview, height: int, width: int,
                   what: str = "compressed image") -> np.ndarray:
    """Decode PNG or JPEG data whose header :func:`check_compressed_data` passed, stating
    ``height`` x ``width`` (not read again; the pixels must come out that size)."""
    buf = np.frombuffer(data, np.uint8)
    jpeg = bytes(data[:2]) == b"\xff\xd8"
    try:
        if jpeg:
            bgr, warning = _decode_jpeg(buf)
        else:
            bgr, warning = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION), ""
    except cv2.error as exc:
        raise SSNetError(f"{what} ({len(data)} bytes) could not be decoded: "
                         f"{str(exc).strip().splitlines()[-1]}") from None
    if warning:
        raise SSNetError(f"{what} ({len(data)} bytes, header {width}x{height}) is corrupt: "
                         f"libjpeg: {warning[:160]}")
    if bgr is None:
        raise SSNetError(f"{what} ({len(data)} bytes) could not be decoded")
    if bgr.shape[:2] != (height, width):
        raise SSNetError(f"{what} decoded to {bgr.shape[1]}x{bgr.shape[0]} but its header "
                         f"says {width}x{height}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


#: libjpeg's warnings that mean the pixels are not all in the data (the rest is fill)
_JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")
_stderr_lock = threading.Lock()
_capture_fd: list[int] = []


def _decode_jpeg(buf: np.ndarray) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode of JPEG data with libjpeg's stderr warnings read meanwhile: (image, the
    first damage warning or ""). Other text written to stderr meanwhile (by any thread) is
    passed on."""
    with _stderr_lock:
        if not _capture_fd:
            try:
                _capture_fd.append(os.memfd_create("ssnet-jpeg-warnings"))
            except (AttributeError, OSError):  # not Linux: no capture, the size check stays
                _capture_fd.append(-1)
        fd = _capture_fd[0]
        if fd < 0:
            return cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION), ""
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        saved = os.dup(2)
        try:
            os.dup2(fd, 2)
            try:
                bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        size = os.lseek(fd, 0, os.SEEK_CUR)
        text = os.pread(fd, size, 0).decode("utf-8", "replace") if size else ""
    damage, other = "", []
    for line in text.splitlines(keepends=True):
        if any(key in line for key in _JPEG_DAMAGE):
            damage = damage or line.strip()
        else:
            other.append(line)
    if other:
        os.write(2, "".join(other).encode())
    return bgr, damage
