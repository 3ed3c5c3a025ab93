"""One decoder for the node and the bag tools (ssnet_ros.core.decode): an input transport is one
table entry, a frame is checked once and decoded once, on a real KITTI frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ssnet_ros.bags import messages as bm
from ssnet_ros.core import decode, image_limits
from ssnet_ros.core.fileio import read_rgb
from ssnet_ros.errors import SSNetError

KITTI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kitti_road_testing"


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A real KITTI road frame (a crop, to keep the test fast)."""
    paths = sorted(KITTI.glob("*.png"))
    if not paths:
        pytest.skip(f"KITTI frames not present at {KITTI} (see shared/data/README.md)")
    return np.ascontiguousarray(read_rgb(paths[0])[100:300, 200:600])


def test_one_table_entry_per_transport() -> None:
    assert set(decode.TRANSPORTS) == {"raw", "compressed"}
    assert decode.TRANSPORTS["compressed"].topic_suffix == "/compressed"
    assert decode.TRANSPORTS["raw"].topic_suffix == ""
    assert set(decode.BY_MSGTYPE) == set(bm.IMAGE_TYPES)
    with pytest.raises(SSNetError, match="'h264' is not one of raw, compressed"):
        decode.transport("h264")


def test_raw_and_compressed_frames_decode_to_the_same_pixels(frame: np.ndarray) -> None:
    hdr = bm.header(1, "cam")
    bgr = bm.image(frame, hdr)
    bgr.encoding, bgr.data = "bgr8", np.ascontiguousarray(frame[:, :, ::-1]).reshape(-1)
    for msg in (bm.image(frame, hdr), bgr, bm.compressed(frame, hdr, "png")):
        kind = decode.BY_MSGTYPE[msg.__msgtype__]
        np.testing.assert_array_equal(decode.to_rgb(msg, kind), frame)
        np.testing.assert_array_equal(bm.to_rgb(msg), frame)  # the bag tools' path
    jpeg = bm.compressed(frame, hdr, "jpeg")
    assert np.abs(bm.to_rgb(jpeg).astype(int) - frame).mean() < 6  # lossy, textured road


def test_decode_takes_the_checks_answer_and_reads_no_header_again(frame: np.ndarray) -> None:
    """The node checks in the callback and decodes in the worker: decode compares the pixels
    with the size the check returned (given a wrong one, it says so), not with the header."""
    msg = bm.compressed(frame, bm.header(1, "cam"), "png")
    kind = decode.TRANSPORTS["compressed"]
    size = kind.check(msg)
    assert size == frame.shape[:2]
    np.testing.assert_array_equal(kind.decode(msg, size), frame)
    with pytest.raises(SSNetError, match="decoded to 400x200 but its header says 400x201"):
        kind.decode(msg, (size[0] + 1, size[1]))
    raw = bm.image(frame, bm.header(1, "cam"))
    channels = decode.TRANSPORTS["raw"].check(raw)
    assert channels == 3
    np.testing.assert_array_equal(decode.TRANSPORTS["raw"].decode(raw, channels), frame)
    data = bytearray(msg.data)
    data[1:4] = b"XXX"
    msg.data = np.frombuffer(bytes(data), np.uint8)
    with pytest.raises(SSNetError, match="neither PNG nor JPEG"):
        decode.to_rgb(msg, kind)


def test_decoded_size_must_match_the_checked_header(frame: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", frame)
    assert ok
    h, w = image_limits.check_compressed_data(png.tobytes())
    with pytest.raises(SSNetError, match="decoded to"):
        image_limits.decode_checked(png.tobytes(), h + 1, w, "x")


def test_bad_frames_get_one_clear_message() -> None:
    hdr = bm.header(1, "cam")
    msg = bm.image(np.zeros((4, 4, 3), np.uint8), hdr)
    msg.encoding = "yuv422"
    with pytest.raises(SSNetError, match="unsupported image encoding 'yuv422'"):
        bm.to_rgb(msg)
    msg.encoding, msg.step = "rgb8", 5
    with pytest.raises(SSNetError, match="step 5 is less than"):
        bm.to_rgb(msg)
    empty = bm.compressed(np.zeros((4, 4, 3), np.uint8), hdr, "png")
    empty.data = np.zeros(0, np.uint8)
    with pytest.raises(SSNetError, match="compressed image .*no data"):
        bm.to_rgb(empty)
