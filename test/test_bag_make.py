"""ssnet-make-bag: image folders (and label PNGs) into rosbag2 files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ssnet_ros.bags import messages as bm
from ssnet_ros.bags.bagfile import BagReader
from ssnet_ros.bags.make import main, make_bag
from ssnet_ros.bags.truth import FRAME_NAMES_KEY, LABEL_FORMAT_KEY, frame_names

NAMES = ["0001TP_006720", "0001TP_006690", "0006R0_f00930", "0001TP_0010000"]
ORDER = ["0001TP_006690", "0001TP_006720", "0001TP_0010000", "0006R0_f00930"]


def write_folder(root: Path, names: list[str], labelled: list[str]) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for i, name in enumerate(names):
        rgb = np.full((24, 32, 3), 10 * i, np.uint8)
        cv2.imwrite(str(images / f"{name}.png"), rgb)
        if name in labelled:
            lab = np.full((24, 32), i, np.uint8)
            lab[:, :3] = 11  # CamVid void
            cv2.imwrite(str(labels / f"{name}.png"), lab)
    return images, labels


def read_topic(bag: Path, topic: str) -> list:
    with BagReader(bag) as reader:
        return [(m.timestamp, bm.deserialize(m.data, m.msgtype))
                for m in reader.messages([topic])]


def test_camvid_order_stamps_and_labels(tmp_path: Path) -> None:
    images, labels = write_folder(tmp_path, NAMES, labelled=NAMES[:3])
    made = make_bag(images, tmp_path / "bag", labels=labels, label_format="camvid", rate=20.0,
                    start=100.0, storage="sqlite3", progress=False)
    assert (made.frames, made.labelled) == (4, 3)
    frames = read_topic(tmp_path / "bag", "/camera/image_raw")
    stamps = [100 * 10**9 + i * 50_000_000 for i in range(4)]
    assert [bm.stamp_ns(m.header) for _, m in frames] == stamps
    assert [ts for ts, _ in frames] == stamps
    by_name = {name: 10 * NAMES.index(name) for name in NAMES}
    assert [int(bm.to_rgb(m)[0, 0, 0]) for _, m in frames] == [by_name[n] for n in ORDER]
    assert all(m.header.frame_id == "camera" and m.encoding == "rgb8" for _, m in frames)
    with BagReader(tmp_path / "bag") as reader:
        assert frame_names(reader.custom) == dict(zip(stamps, ORDER))
        assert reader.custom[LABEL_FORMAT_KEY] == "camvid"
    truth = read_topic(tmp_path / "bag", "/ground_truth/labels")
    assert len(truth) == 3  # 0006R0_f00930 has no label file
    for _, msg in truth:
        labels_px = bm.to_labels(msg)
        name = dict(zip(stamps, ORDER))[bm.stamp_ns(msg.header)]
        assert labels_px[0, 5] == NAMES.index(name) and labels_px[0, 0] == 255  # void -> 255


def test_compressed_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, _ = write_folder(tmp_path, NAMES[:2], labelled=[])
    out = tmp_path / "jpeg_bag"
    assert main([str(images), "--out", str(out), "--format", "jpeg", "--no-progress"]) == 0
    assert "2 frames on /camera/image_raw/compressed" in capsys.readouterr().out
    frames = read_topic(out, "/camera/image_raw/compressed")
    assert [m.__msgtype__ for _, m in frames] == [bm.COMPRESSED] * 2
    assert abs(int(bm.to_rgb(frames[0][1])[5, 5, 0]) - 10) <= 2  # 006690 first; lossy
    with BagReader(out) as reader:
        assert FRAME_NAMES_KEY in reader.custom and LABEL_FORMAT_KEY not in reader.custom
    assert main([str(images), "--out", str(out), "--no-progress"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main([str(images), "--out", str(out), "--overwrite", "--no-progress"]) == 0
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_labels_folder_without_matches_is_an_error(tmp_path: Path) -> None:
    images, labels = write_folder(tmp_path, NAMES[:2], labelled=[])
    assert main([str(images), "--labels", str(labels), "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 2
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("args, message", [
    (["--fps", "nan"], "--fps nan must be a finite number > 0"),
    (["--start", "-5"], "--start -5.0 must be a finite number of seconds >= 0"),
    (["--limit", "-1"], "--limit -1 must be >= 0 (0: all images)"),
])
def test_bad_numbers_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                  args: list, message: str) -> None:
    assert main([str(tmp_path), "--out", str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_overwrite_never_replaces_a_file_and_a_bomb_is_named(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture
                                                            ) -> None:
    from test_image_limits import png_bytes

    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert main([str(images), "--out", str(notes), "--overwrite", "--no-progress"]) == 2
    assert notes.read_text() == "keep" and "is a file" in capsys.readouterr().err
    (images / "b.png").write_bytes(png_bytes(30000, 30000, 2))
    assert main([str(images), "--out", str(tmp_path / "bag"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "b.png" in err and "30000x30000" in err and "Traceback" not in err
    assert not (tmp_path / "bag").exists()


def test_ctrl_c_is_one_line_and_leaves_no_partial(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    images = tmp_path / "images"
    images.mkdir()
    frame = np.random.default_rng(0).integers(0, 255, (360, 480, 3), dtype=np.uint8)
    for i in range(400):
        cv2.imwrite(str(images / f"{i:04d}.png"), frame)
    proc = subprocess.Popen([sys.executable, "-m", "ssnet_ros.bags.make", str(images), "--out",
                             str(tmp_path / "bag"), "--format", "png", "--no-progress"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".bag.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # interrupt it while it writes the bag
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["ssnet-make-bag: interrupted; no bag written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_a_calibration_writes_camera_info_beside_the_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--calibration fx fy cx cy: one sensor_msgs/CameraInfo per frame on the image topic's
    sibling camera_info, same header; its size is --calibration-size or the image's; an rclpy
    CameraInfo decodes the same bytes."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo

    images, _ = write_folder(tmp_path, NAMES, labelled=[])
    assert main([str(images), "--out", str(tmp_path / "bag"), "--format", "jpeg",
                 "--calibration", "721.5", "721.5", "609.6", "172.9",
                 "--calibration-size", "375x1242", "--no-progress"]) == 0
    assert "camera_info on /camera/camera_info" in capsys.readouterr().out
    frames = read_topic(tmp_path / "bag", "/camera/image_raw/compressed")
    infos = read_topic(tmp_path / "bag", "/camera/camera_info")
    assert [m.header for _, m in infos] == [m.header for _, m in frames] and len(infos) == 4
    msg = infos[0][1]
    assert (msg.width, msg.height, msg.distortion_model) == (1242, 375, "plumb_bob")
    assert list(msg.k) == [721.5, 0.0, 609.6, 0.0, 721.5, 172.9, 0.0, 0.0, 1.0]
    rcl = deserialize_message(bytes(bm.serialize(msg)), CameraInfo)
    assert list(rcl.k) == list(msg.k) and rcl.header.frame_id == "camera"
    made = make_bag(images, tmp_path / "bag2", calibration=(50.0, 50.0, 16.0, 12.0),
                    progress=False)
    assert made.info_topic == "/camera/camera_info"
    assert read_topic(tmp_path / "bag2", "/camera/camera_info")[0][1].width == 32
    assert main([str(images), "--out", str(tmp_path / "bag3"), "--calibration-size",
                 "375x1242"]) == 2
    assert "--calibration-size needs --calibration" in capsys.readouterr().err
    with pytest.raises(Exception, match="fx, fy > 0"):
        make_bag(images, tmp_path / "bag4", calibration=(0.0, 1.0, 1.0, 1.0), progress=False)
