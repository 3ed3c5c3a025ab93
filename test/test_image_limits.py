"""Compressed images: the stated size is checked before any pixel is decoded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssnet_ros import SSNetError
from ssnet_ros.core.fileio import read_rgb
from ssnet_ros.core.image_limits import MAX_PIXELS, compressed_size, decode_image


def png_bytes(width: int, height: int, rows: int | None = None) -> bytes:
    """A PNG of zeros stating width x height (only ``rows`` rows of data: a 'bomb')."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"\0" * ((width * 3 + 1) * (height if rows is None else rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def test_header_sizes_of_real_encodings() -> None:
    image = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, image)
        assert ok and compressed_size(buf.tobytes()) == (37, 53)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert compressed_size(buf.tobytes()) == (37, 53)


def test_a_30000_square_png_bomb_is_refused_from_its_header() -> None:
    bomb = png_bytes(30000, 30000, rows=4)
    assert len(bomb) < 2000
    with pytest.raises(SSNetError, match="30000x30000 is outside 1..16384"):
        decode_image(bomb)


def test_a_legal_side_but_too_many_pixels_is_refused() -> None:
    bomb = png_bytes(5000, 5000)  # a complete, valid 75 MB PNG
    assert cv2.imdecode(np.frombuffer(bomb, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(SSNetError, match=r"5000x5000 \(25,000,000 pixels\) exceeds the limit "
                                         r"of 16,777,216 pixels"):
        decode_image(bomb)
    assert 4096 * 3000 <= MAX_PIXELS  # 12 MP cameras pass


@pytest.mark.parametrize("data, message", [
    (b"", "no data"), (b"GIF89a....", "neither PNG nor JPEG"),
    (b"\x89PNG\r\n\x1a\n\0\0", "truncated before its IHDR"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "no frame header"),
])
def test_malformed_headers_are_one_sentence(data: bytes, message: str) -> None:
    with pytest.raises(SSNetError, match=message):
        decode_image(data)


def test_a_truncated_body_is_an_error_not_a_crash() -> None:
    ok, buf = cv2.imencode(".png", np.full((64, 64, 3), 7, np.uint8))
    with pytest.raises(SSNetError, match="could not be decoded|decoded to"):
        decode_image(buf.tobytes()[:80])


def exif_jpeg(orientation: int) -> bytes:
    """A 16x32 JPEG (top half white) with an EXIF orientation tag."""
    image = np.zeros((16, 32, 3), np.uint8)
    image[:8] = 255
    ok, buf = cv2.imencode(".jpg", image)
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(
        ">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0"
    app1 = b"Exif\0\0" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    data = buf.tobytes()
    return data[:2] + segment + data[2:]


def test_exif_orientation_is_ignored_so_labels_stay_aligned(tmp_path: Path) -> None:
    data = exif_jpeg(6)  # "rotate 90": a viewer would show it 16 wide, 32 high
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (32, 16)
    rgb = decode_image(data)
    assert rgb.shape == (16, 32, 3) and rgb[:8].mean() > 200 and rgb[8:].mean() < 50
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    assert read_rgb(path).shape == (16, 32, 3)


def test_files_name_themselves_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(30000, 30000, rows=2))
    with pytest.raises(OSError, match="bomb.png.*30000x30000"):
        read_rgb(path)
