"""sensor_msgs <-> numpy conversions: every encoding, row padding, compression, bad input."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs")

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ssnet_ros.ros.conversions import MAX_SIDE, compressed_to_rgb, image_to_rgb, \
    mono8_msg, rgb8_msg  # noqa: E402
from ssnet_ros.errors import SSNetError  # noqa: E402

RNG = np.random.default_rng(0)
H, W = 5, 7


def raw(encoding: str, pixels: np.ndarray, padding: int) -> Image:
    """An Image of HxWxC ``pixels`` whose rows carry ``padding`` extra bytes (value 0xAB)."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    padded = np.full((h, row.shape[1] + padding), 0xAB, np.uint8)
    padded[:, :row.shape[1]] = row
    msg = Image(height=h, width=w, encoding=encoding, step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())
    return msg


def expected_rgb(encoding: str, wire: np.ndarray) -> np.ndarray:
    if encoding == "rgb8":
        return wire
    if encoding == "bgr8":
        return wire[:, :, ::-1]
    if encoding == "rgba8":
        return wire[:, :, :3]
    if encoding == "bgra8":
        return wire[:, :, 2::-1]
    return np.repeat(wire, 3, axis=2)  # mono8


@pytest.mark.parametrize("padding", [0, 1, 5])
@pytest.mark.parametrize("encoding, channels",
                         [("rgb8", 3), ("bgr8", 3), ("rgba8", 4), ("bgra8", 4), ("mono8", 1)])
def test_every_encoding_honours_row_padding(encoding: str, channels: int, padding: int) -> None:
    wire = RNG.integers(0, 256, (H, W, channels), dtype=np.uint8)
    rgb = image_to_rgb(raw(encoding, wire, padding))
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected_rgb(encoding, wire))


def test_unpadded_rgb8_is_a_view_of_the_message_data() -> None:
    msg = raw("rgb8", RNG.integers(0, 256, (H, W, 3), dtype=np.uint8), 0)
    rgb = image_to_rgb(msg)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))


def test_extra_data_after_the_last_row_is_ignored() -> None:
    wire = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = raw("bgr8", wire, 2)
    msg.data.extend(bytes(9))
    np.testing.assert_array_equal(image_to_rgb(msg), wire[:, :, ::-1])


def test_builders_round_trip_and_keep_the_header() -> None:
    header = Header(frame_id="camera_front")
    header.stamp.sec, header.stamp.nanosec = 1234, 567
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = rgb8_msg(rgb, header)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (H, W, 3 * W, "rgb8")
    assert msg.header == header
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    mono = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    msg = mono8_msg(mono, header)
    assert (msg.step, msg.encoding, msg.header.frame_id) == (W, "mono8", "camera_front")
    assert msg.header.stamp.sec == 1234 and msg.header.stamp.nanosec == 567
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(H, W), mono)
    np.testing.assert_array_equal(image_to_rgb(msg)[:, :, 1], mono)


def test_builders_accept_non_contiguous_arrays() -> None:
    rgb = RNG.integers(0, 256, (H, W * 2, 3), dtype=np.uint8)[:, ::2]
    np.testing.assert_array_equal(image_to_rgb(rgb8_msg(rgb, Header())), rgb)


@pytest.mark.parametrize("builder, array_", [
    (mono8_msg, np.zeros((H, W, 3), np.uint8)),
    (mono8_msg, np.zeros((H, W), np.float32)),
    (rgb8_msg, np.zeros((H, W), np.uint8)),
    (rgb8_msg, np.zeros((H, W, 4), np.uint8)),
])
def test_builders_reject_wrong_arrays(builder: object, array_: np.ndarray) -> None:
    with pytest.raises(ValueError):
        builder(array_, Header())  # type: ignore[operator]


def smooth(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)


def compressed(rgb: np.ndarray, fmt: str) -> CompressedImage:
    ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(format=fmt, data=buf.tobytes())


def test_png_decodes_exactly_and_jpeg_closely() -> None:
    rgb = smooth()
    np.testing.assert_array_equal(compressed_to_rgb(compressed(rgb, "png")), rgb)
    jpeg = compressed_to_rgb(compressed(rgb, "jpg"))
    assert jpeg.shape == rgb.shape
    assert np.abs(jpeg.astype(int) - rgb).mean() < 3


def test_grey_png_decodes_to_rgb() -> None:
    grey = smooth()[:, :, 0]
    ok, buf = cv2.imencode(".png", grey)
    rgb = compressed_to_rgb(CompressedImage(format="png", data=buf.tobytes()))
    np.testing.assert_array_equal(rgb, np.repeat(grey[:, :, None], 3, axis=2))


def test_largest_accepted_side() -> None:
    msg = raw("mono8", np.zeros((1, MAX_SIDE, 1), np.uint8), 0)
    assert image_to_rgb(msg).shape == (1, MAX_SIDE, 3)


def bad(**fields: object) -> Image:
    msg = raw("rgb8", np.zeros((H, W, 3), np.uint8), 0)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize("msg, words", [
    (bad(encoding="yuv422"), "encoding 'yuv422'"),
    (bad(encoding="16UC1"), "encoding '16UC1'"),
    (bad(encoding=""), "encoding ''"),
    (bad(height=0), "size"),
    (bad(width=0, step=0), "size"),
    (bad(width=MAX_SIDE + 1, step=3 * (MAX_SIDE + 1)), "size"),
    (bad(height=100_000), "size"),
    (bad(step=3 * W - 1), "step"),
    (bad(data=array.array("B", bytes(3 * W * H - 1))), "data"),
    (bad(data=array.array("B")), "data"),
    (bad(step=3 * W + 4), "data"),  # the padding the step promises is missing
], ids=["yuv422", "16UC1", "no-encoding", "zero-height", "zero-width", "too-wide",
        "too-high", "short-step", "short-data", "no-data", "step-beyond-data"])
def test_malformed_raw_images_raise_ssnet_error(msg: Image, words: str) -> None:
    with pytest.raises(SSNetError, match=words):
        image_to_rgb(msg)


@pytest.mark.parametrize("data", [b"", b"definitely not an image",
                                  b"\x89PNG\r\n\x1a\n" + bytes(64),
                                  b"\xff\xd8\xff\xe0" + bytes(64)],
                         ids=["empty", "text", "png-signature-only", "jpeg-signature-only"])
def test_corrupt_compressed_images_raise_ssnet_error(data: bytes) -> None:
    with pytest.raises(SSNetError):
        compressed_to_rgb(CompressedImage(format="png", data=data))


def test_truncated_png_raises_ssnet_error() -> None:
    data = compressed(smooth(), "png").data
    with pytest.raises(SSNetError, match="could not be decoded"):
        compressed_to_rgb(CompressedImage(format="png", data=data[:len(data) // 3]))


def test_a_huge_encoding_or_format_is_quoted_short() -> None:
    from ssnet_ros.ros.conversions import check_compressed

    msg = Image(height=2, width=2, encoding="x" * 10_000, step=6, data=bytes(12))
    with pytest.raises(SSNetError) as info:
        image_to_rgb(msg)
    assert len(str(info.value)) < 200 and "(10000 characters)" in str(info.value)
    with pytest.raises(SSNetError) as info:
        check_compressed(CompressedImage(format="y" * 10_000, data=b"not an image"))
    assert len(str(info.value)) < 200


def test_the_pixel_limit_message_tells_the_numbers_apart() -> None:
    msg = Image(height=4097, width=4097, encoding="mono8", step=4097)
    with pytest.raises(SSNetError, match=r"4097x4097 \(16,785,409 pixels\) exceeds the limit "
                                         r"of 16,777,216 pixels \(4096x4096\)"):
        image_to_rgb(msg)


def test_a_jpeg_whose_header_claims_more_than_its_data_is_rejected() -> None:
    import struct

    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (48, 64, 3),
                                                                       np.uint8))
    data = bytearray(buf.tobytes())
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", 400, 640)  # header: 640x400 over 64x48 data
    with pytest.raises(SSNetError, match="header 640x400.* is corrupt: libjpeg: Corrupt JPEG"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=bytes(data)))
    good = compressed_to_rgb(CompressedImage(format="jpeg", data=buf.tobytes()))
    assert good.shape == (48, 64, 3)
