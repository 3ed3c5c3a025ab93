"""The drivable decision (confidence floor, connected pass) on real frames with the shipped
model: the mask is always the drivable classes of the labels, in every output path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from ssnet_ros.core import options as cli
from ssnet_ros.core.drivable import OFF, DrivableRule, apply_floor, check_classes, \
    connected_to_seed, keep_connected, seed_region
from ssnet_ros.core.render import OUTPUT_KEYS
from ssnet_ros.core.segmenter import Segmenter, default_weights
from ssnet_ros.errors import SSNetError

NET = (96, 128)  # a small network input keeps the shipped model fast on two busy cores
RULES = (OFF, DrivableRule(0.5), DrivableRule(0.9), DrivableRule(0.0, True),
         DrivableRule(0.7, True), DrivableRule(1.0, True))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Two real held-out frames: IDD-Lite (India) and Cityscapes (Weimar)."""
    from ssnet_ros.datasets import open_dataset

    out = []
    for name in ("idd_lite", "cityscapes_p2p"):
        root = SHARED_DATA / name
        if not root.is_dir():
            pytest.skip(f"real {name} data not present at {root}")
        out.append(open_dataset(name, root, "holdout")[3][0])
    return out


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    if default_weights() is None:
        pytest.skip("this installation ships no weights")
    return Segmenter(None, device="cpu", input_size=NET, drivable_rule=OFF)


@pytest.fixture(scope="module")
def raw(seg: Segmenter, frames: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    """The network's own (labels, confidence, fallback) of each frame."""
    out = []
    for image in frames:
        labels, conf, fb = seg.network_outputs(torch.from_numpy(image[None]), fallback=True)
        out.append((labels[0], conf[0], fb[0]))
    return out


def test_mask_and_labels_agree_under_every_setting(seg: Segmenter, frames: list[np.ndarray],
                                                   raw: list[tuple[np.ndarray, ...]]) -> None:
    lut = seg.drivable_lut
    palette = np.asarray(seg.palette, np.uint8)
    try:
        for rule in RULES:
            seg.set_drivable_rule(rule)
            results = seg.segment_batch(frames)
            rendered = seg.render_batch(frames, OUTPUT_KEYS)
            for image, result, out, (labels0, conf0, _) in zip(frames, results, rendered, raw):
                np.testing.assert_array_equal(result.drivable, lut[result.labels])
                np.testing.assert_array_equal(out["labels"], result.labels)
                np.testing.assert_array_equal(out["drivable_mask"],
                                              np.where(lut[out["labels"]], 255, 0))
                np.testing.assert_array_equal(out["color"], palette[out["labels"]])
                changed = result.labels != labels0
                # only drivable pixels are rejected, and they take a non-drivable class
                assert lut[labels0[changed]].all() and not lut[result.labels[changed]].any()
                np.testing.assert_array_equal(result.confidence, conf0)  # unchanged
                if rule.floor:
                    assert (conf0[result.drivable] >= rule.floor).all()
                if rule.connected:
                    np.testing.assert_array_equal(connected_to_seed(result.drivable),
                                                  result.drivable)
            if rule == OFF:
                assert all(r.drivable.mean() > 0.1 for r in results)  # the road is found
    finally:
        seg.set_drivable_rule(OFF)


def test_the_floor_is_monotone(seg: Segmenter, raw: list[tuple[np.ndarray, ...]]) -> None:
    lut = seg.drivable_lut
    for labels, conf, fb in raw:
        previous, counts = lut[labels], []
        for floor in (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
            mask = lut[apply_floor(labels, conf, fb, lut, floor)]
            assert not (mask & ~previous).any()  # a higher floor never adds a pixel
            previous = mask
            counts.append(int(mask.sum()))
        assert counts == sorted(counts, reverse=True) and counts[0] > counts[-2] > 0


def test_the_connected_pass_drops_a_disconnected_blob_and_keeps_the_ego_road(
        seg: Segmenter, raw: list[tuple[np.ndarray, ...]]) -> None:
    lut = seg.drivable_lut
    road = seg.class_names.index("Road")
    labels, _, fb = raw[1]  # the Cityscapes frame: the road ahead reaches the bottom centre
    h, w = labels.shape
    base = keep_connected(labels, fb, lut)
    ego = lut[base]
    rows, cols = seed_region(h, w)
    assert ego[rows, cols].any() and ego.mean() > 0.1  # the road ahead is kept
    painted = base.copy()
    painted[2:12, 2:22] = fb[2:12, 2:22]  # a non-drivable frame around ...
    painted[4:10, 4:20] = road  # ... a road blob in the top left corner
    assert not connected_to_seed(lut[painted])[4:10, 4:20].any()
    kept = keep_connected(painted, fb, lut)
    np.testing.assert_array_equal(kept[4:10, 4:20], fb[4:10, 4:20])  # the blob is dropped
    np.testing.assert_array_equal(lut[kept], ego & lut[painted])  # the ego road is kept
    np.testing.assert_array_equal(kept[ego], base[ego])


def test_seed_region_and_connectivity_on_a_drawn_mask() -> None:
    mask = np.zeros((40, 60), bool)
    mask[30:, 20:40] = True  # the road in front (bottom centre)
    mask[5:10, 0:10] = True  # a car park far away
    mask[25:40, 0:5] = True  # a verge strip at the bottom left, outside the seed columns
    mask[20:30, 29] = True  # a lane going ahead, connected by its 4-neighbourhood
    mask[19, 30] = True  # only diagonally connected: not kept
    rows, cols = seed_region(40, 60)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (32, 40, 15, 45)
    kept = connected_to_seed(mask)
    assert kept[30:, 20:40].all() and kept[20:30, 29].all()
    assert not kept[5:10, 0:10].any() and not kept[25:40, 0:5].any() and not kept[19, 30]
    assert not connected_to_seed(np.zeros((4, 4), bool)).any()


def test_bad_rules_are_one_clear_error() -> None:
    for floor in (-0.1, 1.5, float("nan")):
        with pytest.raises(SSNetError, match="drivable floor"):
            DrivableRule(floor)
    with pytest.raises(SSNetError, match="needs a class that is not drivable"):
        check_classes((0, 1), 2, DrivableRule(0.5))
    check_classes((0, 1), 2, OFF)
    p = cli.parser("x", "")
    cli.add(p, "--drivable-floor", "--drivable-connected")
    assert cli.drivable_rule(p.parse_args(["--drivable-floor", "0.6", "--drivable-connected"])
                             ) == DrivableRule(0.6, True)
    assert cli.drivable_rule(p.parse_args(["--no-drivable-connected"])).connected is False
    with pytest.raises(cli.UsageError, match="--drivable-floor"):
        cli.drivable_rule(p.parse_args(["--drivable-floor", "2"]))


def test_eval_refuses_a_bad_floor_in_one_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from ssnet_ros.training.evaluate import main

    assert main(["--dataset", "camvid", "--root", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--drivable-floor", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == ("ssnet-eval: --drivable-floor: drivable floor "
                                               "1.5 is outside 0..1")


def test_the_curve_command_writes_json_markdown_and_png(tmp_path: Path) -> None:
    from ssnet_ros.tools.drivable_curve import main

    if default_weights() is None:
        pytest.skip("this installation ships no weights")
    if not (SHARED_DATA / "idd_lite").is_dir() or not (SHARED_DATA / "cityscapes_p2p").is_dir():
        pytest.skip(f"the hold-outs are not under {SHARED_DATA}")
    out = tmp_path / "curve"
    assert main(["--out", str(out), "--data", str(SHARED_DATA), "--limit", "1",
                 "--input-height", str(NET[0]), "--input-width", str(NET[1]),
                 "--floors", "0.5,0.9", "--no-progress"]) == 0
    report = json.loads((out / "curve.json").read_text())
    assert set(report["domains"]) == {"idd_lite/holdout", "cityscapes_p2p/holdout"}
    for d in report["domains"].values():
        assert d["images"] == 1 and [p["floor"] for p in d["plain"]] == [0.0, 0.5, 0.9]
        recalls = [p["recall"] for p in d["plain"]]
        assert recalls == sorted(recalls, reverse=True)
        for p, c in zip(d["plain"], d["connected"]):  # the pass only removes pixels
            assert c["tp"] <= p["tp"] and c["fp"] <= p["fp"] and c["fn"] >= p["fn"]
    assert (out / "curve.png").stat().st_size > 10000
    assert "Best mean drivable IoU" in (out / "curve.md").read_text()
    assert main(["--out", str(out), "--data", str(SHARED_DATA)]) == 2  # no --overwrite


def test_the_cuda_path_decides_as_the_host(frames: list[np.ndarray]) -> None:
    """On a GPU, render_batch (CUDA graphs; the floor on the device, the connected pass on
    the host) gives the labels segment_batch gives, and its mask is their drivable classes."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if default_weights() is None:
        pytest.skip("this installation ships no weights")
    seg = Segmenter(None, device="cuda", precision="fp32", input_size=NET, drivable_rule=OFF)
    lut, palette = seg.drivable_lut, np.asarray(seg.palette, np.uint8)
    for rule in RULES + (DrivableRule(0.6),):
        seg.set_drivable_rule(rule)
        for out, result in zip(seg.render_batch(frames, OUTPUT_KEYS), seg.segment_batch(frames)):
            np.testing.assert_array_equal(out["drivable_mask"],
                                          np.where(lut[out["labels"]], 255, 0))
            np.testing.assert_array_equal(out["color"], palette[out["labels"]])
            assert (out["labels"] == result.labels).mean() > 0.999, rule
    assert seg.cuda_graphs, seg.graph_error
