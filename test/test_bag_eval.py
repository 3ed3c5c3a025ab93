"""ssnet-eval-bag on real bag files: round trips against the inference core, ground truth with
gaps, label folders, damaged bags, and the ssnet-eval agreement on CamVid."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssnet_ros import Segmenter
from ssnet_ros.bags import messages as bm
from ssnet_ros.bags.evaluate import EvalOptions, main, run
from ssnet_ros.bags.bagfile import BagReader, BagWriter
from ssnet_ros.bags.make import make_bag
from ssnet_ros.datasets import open_dataset
from ssnet_ros.errors import SSNetError
from ssnet_ros.training.evaluate import evaluate, image_scores
from ssnet_ros.training.metrics import confusion_matrix, summarize
from ssnet_ros.core.visualize import colorize, confidence_to_mono8, overlay

from conftest import write_camvid_fixture  # noqa: I100 - test helper

NET = (24, 32)
OUTPUTS = ["/segmentation/labels", "/segmentation/drivable_mask", "/segmentation/overlay"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine this is several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def segmenter(ssnet_checkpoint_varied: Path) -> Segmenter:
    return Segmenter(ssnet_checkpoint_varied, device="cpu", input_size=NET)


@pytest.fixture()
def camvid_val(tmp_path: Path) -> Path:
    return write_camvid_fixture(tmp_path / "camvid", n_train=0, n_val=6, size=(48, 64))


def read(bag: Path, topic: str) -> list[tuple[int, object, bytes]]:
    with BagReader(bag) as reader:
        return [(m.timestamp, bm.deserialize(m.data, m.msgtype), bytes(m.data))
                for m in reader.messages([topic])]


@pytest.mark.parametrize("storage,fmt,confidence",
                         [("mcap", "raw", False), ("sqlite3", "jpeg", True)])
def test_round_trip_matches_inference_core(tmp_path: Path, camvid_val: Path,
                                           segmenter: Segmenter, storage: str, fmt: str,
                                           confidence: bool) -> None:
    bag = tmp_path / "drive"
    topic = "/camera/image_raw" if fmt == "raw" else "/camera/image_raw/compressed"
    make_bag(camvid_val / "val", bag, labels=camvid_val / "valannot", label_format="camvid",
             topic=topic, fmt=fmt, storage=storage, rate=15.0, progress=False)
    options = EvalOptions(truth_topic="/ground_truth/labels", batch_size=3,
                          confidence=confidence, progress=False)
    report = run(segmenter, [bag], tmp_path / "out", options, NET)
    assert (report["frames"], report["frames_segmented"], report["frames_scored"]) == (6, 6, 6)
    assert report["frames_without_truth"] == 0 and not report["damaged"]

    out = tmp_path / "out" / "drive"
    names = OUTPUTS + (["/segmentation/confidence"] if confidence else [])
    with BagReader(out) as reader:
        assert reader.storage == storage
        assert {t: i.count for t, i in reader.topics.items()} == {
            topic: 6, **dict.fromkeys(names, 6)}
    inputs = read(bag, topic)
    copied = read(out, topic)
    assert [(ts, raw) for ts, _, raw in copied] == [(ts, raw) for ts, _, raw in inputs]
    rgbs = [bm.to_rgb(msg) for _, msg, _ in inputs]
    core = segmenter.segment_batch(rgbs[:3], confidence=confidence) + \
        segmenter.segment_batch(rgbs[3:], confidence=confidence)
    outs = {name: read(out, name) for name in names}
    matrix = np.zeros((11, 11), np.int64)
    for i, (ts, msg, _) in enumerate(inputs):
        for name in outs:
            out_ts, out_msg, _ = outs[name][i]
            assert out_ts == ts and out_msg.header == msg.header  # stamps equal
        labels = bm.to_labels(outs["/segmentation/labels"][i][1])
        np.testing.assert_array_equal(labels, core[i].labels)
        np.testing.assert_array_equal(bm.to_labels(outs["/segmentation/drivable_mask"][i][1]),
                                      np.where(core[i].drivable, 255, 0))
        if confidence:
            np.testing.assert_array_equal(
                bm.to_labels(outs["/segmentation/confidence"][i][1]),
                confidence_to_mono8(core[i].confidence))
        np.testing.assert_array_equal(
            bm.to_rgb(outs["/segmentation/overlay"][i][1]),
            overlay(rgbs[i], colorize(core[i].labels, segmenter.palette), 0.5))
        truth = cv2.imread(str(sorted((camvid_val / "valannot").iterdir())[i]), 0)
        matrix += confusion_matrix(core[i].labels, truth, 11)
    expected = summarize(matrix, segmenter.class_names, segmenter.drivable_ids)
    assert report["metrics"]["miou"] == pytest.approx(expected["miou"])
    assert report["metrics"]["drivable"] == pytest.approx(expected["drivable"])
    if fmt == "raw":  # lossless frames, labels by argmax: the very numbers of ssnet-eval
        summary, _, _ = evaluate(segmenter, open_dataset("camvid", camvid_val, "val"),
                                 batch_size=3, progress=False)
        assert report["metrics"]["miou"] == pytest.approx(summary["miou"], abs=1e-3)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| mIoU |" in md and "p99 ms" in md and "frames without ground truth | 0" in md
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["inference_ms_per_frame"]["p50"] > 0 and saved["bags"][0]["damage"] is None
    # pictures as ssnet-eval draws them: the 3 worst frames by drivable IoU, then a spread
    pictures = sorted(p.name for p in (tmp_path / "out" / "drive_panels").iterdir())
    assert [p[:9] for p in pictures[:3]] == ["00_worst_", "01_worst_", "02_worst_"]
    assert 4 <= len(pictures) <= 6 and all("_frame_" in p for p in pictures[3:])
    ious = [image_scores(core[i].labels, cv2.imread(str(sorted(
        (camvid_val / "valannot").iterdir())[i]), 0), segmenter.drivable_ids)[1]
        for i in range(6)]
    assert pictures[0].removeprefix("00_worst_").removesuffix(".png") in \
        sorted((camvid_val / "val").iterdir())[int(np.argmin(ious))].name


def scene(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([127 + 120 * np.sin(xx / (9 + 4 * c) + yy / (11 + 3 * c) + i)
                     for c in range(3)], axis=-1).astype(np.uint8)


def test_truth_topic_with_missing_frames(tmp_path: Path, segmenter: Segmenter) -> None:
    """Ground truth recorded for some frames only, one for no frame, one of the wrong size."""
    t0 = 1_600_000_000 * 10**9
    stamps = [t0 + i * 50_000_000 for i in range(6)]
    truths = {i: (np.arange(48 * 64).reshape(48, 64) % 12).astype(np.uint8) for i in (0, 2, 5)}
    with BagWriter(tmp_path / "gaps", storage="mcap") as w:
        w.add_topic("/cam", bm.IMAGE)
        w.add_topic("/gt", bm.IMAGE)
        for i, stamp in enumerate(stamps):
            w.write("/cam", stamp + 1000, bm.image(scene(i), bm.header(stamp, "cam")))
            if i in truths:  # recorded a little later than the frame, matched by stamp
                w.write("/gt", stamp + 5000, bm.image(truths[i], bm.header(stamp, "cam")))
        w.write("/gt", t0 - 1, bm.image(truths[0], bm.header(t0 - 1, "cam")))
        w.write("/gt", stamps[3], bm.image(np.zeros((8, 8), np.uint8),
                                           bm.header(stamps[3], "cam")))
    report = run(segmenter, [tmp_path / "gaps"], tmp_path / "out",
                 EvalOptions(truth_topic="/gt", batch_size=1, progress=False), NET)
    assert (report["frames"], report["frames_scored"], report["frames_without_truth"]) == \
        (6, 3, 3)
    assert report["frames_without_truth_stamps"] == [stamps[1], stamps[3], stamps[4]]
    bag = report["bags"][0]
    assert bag["truth_unmatched"] == 1 and bag["topic"] == "/cam"
    assert any("8x8" in p for p in bag["truth_problems"])
    core = [segmenter(scene(i), confidence=False) for i in truths]
    matrix = sum(confusion_matrix(r.labels, t, 11) for r, t in zip(core, truths.values()))
    assert report["metrics"]["miou"] == pytest.approx(
        summarize(matrix, segmenter.class_names, segmenter.drivable_ids)["miou"])
    assert "frames without ground truth | 3" in (tmp_path / "out" / "report.md").read_text()


def test_truth_folder_by_name_and_by_stamp(tmp_path: Path, camvid_val: Path,
                                           segmenter: Segmenter) -> None:
    make_bag(camvid_val / "val", tmp_path / "named", progress=False)
    report = run(segmenter, [tmp_path / "named"], tmp_path / "a",
                 EvalOptions(truth_dir=camvid_val / "valannot", label_format="camvid",
                             progress=False), NET)
    assert report["frames_scored"] == 6 and report["frames_without_truth"] == 0
    # a bag whose frames carry no names: label PNGs named <sec>_<nanosec>.png
    stamp = 1_650_000_000 * 10**9 + 5
    with BagWriter(tmp_path / "plain") as w:
        w.add_topic("/cam", bm.IMAGE)
        for i in range(2):
            w.write("/cam", stamp + i, bm.image(scene(i), bm.header(stamp + i, "cam")))
    folder = tmp_path / "gt"
    folder.mkdir()
    cv2.imwrite(str(folder / "1650000000_000000005.png"), np.full((48, 64), 3, np.uint8))
    report = run(segmenter, [tmp_path / "plain"], tmp_path / "b",
                 EvalOptions(truth_dir=folder, progress=False), NET)
    assert (report["frames_scored"], report["frames_without_truth"]) == (1, 1)


def test_truncated_bag_is_evaluated_up_to_the_damage(
        tmp_path: Path, ssnet_checkpoint_varied: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(30):
        cv2.imwrite(str(images / f"f{i}.png"), scene(i, 120, 160))
    make_bag(images, tmp_path / "cut", progress=False)
    storage = tmp_path / "cut" / "cut.mcap"
    data = storage.read_bytes()
    storage.write_bytes(data[:len(data) * 7 // 10])
    args = [str(tmp_path / "cut"), "--out", str(tmp_path / "out"), "--weights",
            str(ssnet_checkpoint_varied), "--input-height", str(NET[0]), "--input-width",
            str(NET[1]), "--device", "cpu", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bag " in err[0] and "cut.mcap" in err[0] and "damaged" in err[0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["damaged"] and 5 <= report["frames"] < 30
    with BagReader(tmp_path / "out" / "cut") as reader:  # complete, readable output bag
        assert reader.damage is None
        assert reader.topics["/segmentation/labels"].count == report["frames"]
    # an existing output is never replaced without --overwrite
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 1


def test_several_bags_one_report(tmp_path: Path, camvid_val: Path,
                                 segmenter: Segmenter) -> None:
    for name, storage in (("a", "mcap"), ("b", "sqlite3")):
        make_bag(camvid_val / "val", tmp_path / name, labels=camvid_val / "valannot",
                 limit=2, storage=storage, progress=False)
    report = run(segmenter, [tmp_path / "a", tmp_path / "b"], tmp_path / "out",
                 EvalOptions(progress=False), NET)  # camera topic found, truth not used
    assert report["frames"] == 4 and report["metrics"] is None and report["truth"] is None
    assert [b["output"] for b in report["bags"]] == [str(tmp_path / "out" / n) for n in "ab"]
    assert [b["topic"] for b in report["bags"]] == ["/camera/image_raw"] * 2
    assert "No ground truth" in (tmp_path / "out" / "report.md").read_text()
    assert len(list((tmp_path / "out" / "a_panels").glob("*_frame_*.png"))) == 2  # a spread
    (tmp_path / "c").mkdir()
    shutil.copytree(tmp_path / "a", tmp_path / "c" / "a")
    with pytest.raises(SSNetError, match="same name"):
        run(segmenter, [tmp_path / "a", tmp_path / "c" / "a"], tmp_path / "out2",
            EvalOptions(progress=False))


def test_unusable_inputs_fail_before_writing(tmp_path: Path, ssnet_checkpoint_varied: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--out", str(tmp_path / "out"), "--weights", str(ssnet_checkpoint_varied),
            "--no-progress"]
    assert main([str(tmp_path / "nope")] + base) == 2
    assert "bag " in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    assert main([str(broken)] + base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(broken) in err and "cannot be read" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_camvid_val_bag_matches_ssnet_eval(tmp_path: Path, camvid_root: Path,
                                           segmenter: Segmenter) -> None:
    """The done criterion on real CamVid frames (a few, at a small network size)."""
    n = 5
    make_bag(camvid_root / "val", tmp_path / "camvid_val", labels=camvid_root / "valannot",
             label_format="camvid", limit=n, progress=False)
    report = run(segmenter, [tmp_path / "camvid_val"], tmp_path / "out",
                 EvalOptions(truth_topic="/ground_truth/labels", batch_size=1,
                             progress=False), NET)
    summary, _, _ = evaluate(segmenter, open_dataset("camvid", camvid_root, "val"), limit=n,
                             batch_size=1, progress=False)
    assert report["frames_scored"] == n
    assert abs(report["metrics"]["miou"] - summary["miou"]) < 1e-3
    with BagReader(tmp_path / "out" / "camvid_val") as reader:
        labels = [bm.stamp_ns(bm.deserialize(m.data, m.msgtype).header)
                  for m in reader.messages(["/segmentation/labels"])]
        frames = [bm.stamp_ns(bm.deserialize(m.data, m.msgtype).header)
                  for m in reader.messages(["/camera/image_raw"])]
    assert labels == frames and len(frames) == n
    shutil.rmtree(tmp_path / "out")


def test_a_png_bomb_among_good_frames_is_rejected_and_the_rest_segmented(
        tmp_path: Path, segmenter: Segmenter) -> None:
    from test_image_limits import png_bytes

    t0 = 1_600_000_000 * 10**9
    with BagWriter(tmp_path / "bomb", storage="mcap") as w:
        w.add_topic("/cam/compressed", bm.COMPRESSED)
        for i in range(5):
            hdr = bm.header(t0 + i, "cam")
            msg = bm.compressed(scene(i), hdr, "png")
            if i == 2:  # 30000x30000 claimed in under 2 KB
                msg = bm.typestore().types[bm.COMPRESSED](
                    header=hdr, format="png", data=np.frombuffer(png_bytes(30000, 30000, 2),
                                                                 np.uint8))
            w.write("/cam/compressed", t0 + i, msg)
    report = run(segmenter, [tmp_path / "bomb"], tmp_path / "out",
                 EvalOptions(batch_size=2, progress=False), NET)
    bag = report["bags"][0]
    assert bag["frames"] == 5 and len(bag["rejected"]) == 1
    assert "30000x30000" in bag["rejected"][0]
    labels = read(tmp_path / "out" / "bomb", "/segmentation/labels")
    assert len(labels) == 4 and (tmp_path / "out" / "report.json").is_file()


def test_rejected_frames_do_not_pile_up_in_memory(tmp_path: Path, segmenter: Segmenter,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames in an unsupported encoding flush with the batch, not only good ones."""
    from ssnet_ros.bags import evaluator as bag_eval

    sizes = []
    original = bag_eval._BagEvaluator._flush

    def spy(self: object, batch: list) -> None:
        sizes.append(len(batch))
        original(self, batch)

    monkeypatch.setattr(bag_eval._BagEvaluator, "_flush", spy)
    with BagWriter(tmp_path / "bayer", storage="mcap") as w:
        w.add_topic("/cam", bm.IMAGE)
        for i in range(9):
            msg = bm.image(scene(i), bm.header(i + 1, "cam"))
            msg.encoding = "bayer_rggb8"
            w.write("/cam", i + 1, msg)
    report = run(segmenter, [tmp_path / "bayer"], tmp_path / "out",
                 EvalOptions(batch_size=4, progress=False), NET)
    assert len(report["bags"][0]["rejected"]) == 9
    assert max(sizes) <= 4


def test_a_bag_without_images_among_several_is_reported_not_fatal(
        tmp_path: Path, camvid_val: Path, ssnet_checkpoint_varied: Path,
        capsys: pytest.CaptureFixture) -> None:
    make_bag(camvid_val / "val", tmp_path / "good", limit=2, progress=False)
    with BagWriter(tmp_path / "empty") as w:
        w.add_topic("/chatter", "std_msgs/msg/String")
    out = tmp_path / "out"
    code = main([str(tmp_path / "good"), str(tmp_path / "empty"), "--out", str(out),
                 "--weights", str(ssnet_checkpoint_varied), "--device", "cpu",
                 "--input-height", "48", "--input-width", "64", "--no-progress"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 2 and report["failed_bags"][0]["bag"] == str(tmp_path / "empty")
    assert "was not evaluated" in capsys.readouterr().err
    # the report files are replaced with --overwrite (they are files, not bags)
    assert main([str(tmp_path / "good"), "--out", str(out), "--overwrite", "--weights",
                 str(ssnet_checkpoint_varied), "--device", "cpu", "--input-height", "48",
                 "--input-width", "64", "--no-progress"]) == 0


def test_a_bag_with_camera_info_gets_the_drivable_grid(tmp_path: Path, camvid_val: Path,
                                                      segmenter: Segmenter) -> None:
    """ssnet-make-bag --calibration + ssnet-eval-bag --camera-pose: camera_info is copied and
    one OccupancyGrid per frame is written, stamped like its frame, in --grid-frame, holding
    the output drivable mask projected with the bag's calibration; without --camera-pose the
    report says how to get it."""
    from ssnet_ros.core.ground_grid import Camera, GridSpec, grid_lookup, sample_grid

    bag = tmp_path / "drive"
    make_bag(camvid_val / "val", bag, calibration=(50.0, 50.0, 32.0, 20.0), progress=False)
    pose = (0.0, 0.0, 1.5, 0.0, 0.1, 0.0)
    spec = GridSpec(0.25, (0.0, 12.0), (-6.0, 6.0))
    options = EvalOptions(progress=False, camera_pose=pose, grid=spec, grid_frame="ego")
    report = run(segmenter, [bag], tmp_path / "out", options, NET)
    assert report["bags"][0]["drivable_grids"] == 6
    out = tmp_path / "out" / "drive"
    grids = read(out, "/segmentation/drivable_grid")
    masks = read(out, "/segmentation/drivable_mask")
    assert len(read(out, "/camera/camera_info")) == 6 and len(grids) == 6
    lookup = grid_lookup(Camera((50.0, 0.0, 32.0, 0.0, 50.0, 20.0, 0.0, 0.0, 1.0), 64, 48,
                                pose), spec)
    for (ts, grid, _), (ts_mask, mask, _) in zip(grids, masks):
        assert ts == ts_mask and grid.header == mask.header.__class__(
            stamp=mask.header.stamp, frame_id="ego")
        assert (grid.info.width, grid.info.height, grid.info.resolution) == (48, 48, 0.25)
        assert (grid.info.origin.position.x, grid.info.origin.position.y) == (0.0, -6.0)
        expected = sample_grid(lookup, bm.to_labels(mask) > 0)
        np.testing.assert_array_equal(np.asarray(grid.data).reshape(48, 48), expected)
    assert (np.asarray(grids[0][1].data) != -1).sum() > 50
    report = run(segmenter, [bag], tmp_path / "out2", EvalOptions(progress=False), NET)
    assert report["bags"][0]["drivable_grids"] == 0
    assert any("--camera-pose" in n for n in report["bags"][0]["notes"])
    from ssnet_ros.bags.evaluate import report_markdown

    assert "--camera-pose X Y Z" in report_markdown(report).split("## Notes")[1]  # console too
    assert len(read(tmp_path / "out2" / "drive", "/camera/camera_info")) == 6


def test_a_calibration_of_other_images_writes_no_grid_and_fails(
        tmp_path: Path, camvid_val: Path, ssnet_checkpoint_varied: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The probe: camera_info for 100x900 images beside 64x48 frames: no all-unknown grids
    counted as written, the reason in the report and on stderr, exit 1."""
    bag = tmp_path / "mismatch"
    make_bag(camvid_val / "val", bag, calibration=(50.0, 50.0, 50.0, 450.0),
             calibration_size=(900, 100), limit=3, progress=False)
    out = tmp_path / "out"
    code = main([str(bag), "--out", str(out), "--weights", str(ssnet_checkpoint_varied),
                 "--device", "cpu", "--input-height", "24", "--input-width", "32",
                 "--no-progress", "--camera-pose", "0", "0", "1.5", "0", "0.1", "0"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["bags"][0]["drivable_grids"] == 0
    assert "for 100x900 images but the images are 64x48" in \
        report["bags"][0]["drivable_grid_problem"]
    assert "no drivable grid written" in capsys.readouterr().err


def test_a_corrupt_metadata_yaml_and_a_bag_without_frames_exit_nonzero(
        tmp_path: Path, camvid_val: Path, ssnet_checkpoint_varied: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--weights", str(ssnet_checkpoint_varied), "--device", "cpu", "--input-height",
            "24", "--input-width", "32", "--no-progress"]
    bag = tmp_path / "meta"
    make_bag(camvid_val / "val", bag, limit=2, progress=False)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    assert main([str(bag), "--out", str(tmp_path / "out1")] + base) == 1
    report = json.loads((tmp_path / "out1" / "report.json").read_text())
    assert report["frames"] == 2 and "metadata.yaml is unreadable" in \
        report["bags"][0]["damage"]
    assert "is damaged" in capsys.readouterr().err
    with BagWriter(tmp_path / "none") as w:
        w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    assert main([str(tmp_path / "none"), "--out", str(tmp_path / "out2"),
                 "--topic", "/camera/image_raw"] + base) == 1
    assert "has no frames on /camera/image_raw" in capsys.readouterr().err


def test_a_grid_resolution_beyond_memory_is_refused_up_front(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--grid-resolution",
                 "0.01"]) == 2
    assert "needs about 3200 MB to project" in capsys.readouterr().err
