"""ssnet-calibrate: a logit offset on the drivable classes, chosen on training frames the run
never drew, goes into the classifier bias and the card; the calibrated weights decide as the
measurement said."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from ssnet_ros.core.checkpoint import load_checkpoint, read_card
from ssnet_ros.core.drivable import OFF
from ssnet_ros.core.segmenter import Segmenter, default_weights
from ssnet_ros.errors import SSNetError
from ssnet_ros.tools.calibrate import CLASSIFIER_BIAS, choose, drawn_by_frames, drawn_frames, \
    main, measure, parse_offsets, soup_samples, unseen_frames

NET = ("--input-height", "96", "--input-width", "128")


def test_offsets_frames_and_the_choice() -> None:
    assert parse_offsets("1, 0.5") == [0.0, 0.5, 1.0]
    with pytest.raises(SSNetError, match="comma-separated"):
        parse_offsets("1,x")
    assert unseen_frames(10, {0, 1, 2, 5}, 3) == [3, 6, 8]
    assert unseen_frames(4, set(), 10) == [0, 1, 2, 3]
    rows = {"a": [{"iou": 0.80, "precision": 0.95}, {"iou": 0.84, "precision": 0.92},
                  {"iou": 0.86, "precision": 0.88}],
            "b": [{"iou": 0.82, "precision": 0.97}, {"iou": 0.83, "precision": 0.94},
                  {"iou": 0.85, "precision": 0.93}]}
    # offset 1 has the best mean IoU but costs domain a its precision floor
    assert choose(rows, [0.0, 0.5, 1.0], 0.9)["offset"] == 0.5
    assert choose(rows, [0.0, 0.5, 1.0], 0.0)["offset"] == 1.0
    assert choose(rows, [0.0, 0.5, 1.0], 0.99)["offset"] == 0.0  # none keeps it: uncalibrated


def test_a_bad_samples_log_names_the_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "samples_rank0.jsonl"
    log.write_text('{"step": 0, "picks": [[0, 3], [1, 7]]}\n{"step": 1, "picks": [[2, 1]]}\n')
    with pytest.raises(SSNetError, match=r"samples_rank0.jsonl line 2 is not a samples log"):
        drawn_frames([log], ["camvid", "idd_lite"])
    log.write_text('{"step": 0, "picks": [[0, 3], [1, 7], [1, 9]]}\n')
    assert drawn_frames([log], ["camvid", "idd_lite"]) == {"camvid": {3}, "idd_lite": {7, 9}}


def test_a_soup_s_logs_are_read_with_their_own_stage_s_datasets(tmp_path: Path) -> None:
    """Each stage of a soup numbers its picks by its own datasets; a frame drawn under
    idd_lite or idd_lite_loose (the same frames) is drawn; every stage's log is required."""
    ingredients = []
    for stage, names in (("s4", ["camvid", "idd_lite"]), ("s5", ["idd_lite_loose", "camvid"])):
        (tmp_path / stage).mkdir()
        ingredients.append({"stage": str(tmp_path / stage / "final.pt"), "training": {
            "datasets": [{"name": n, "split": "train"} for n in names]}})
    training = {"datasets": [], "interpolation": {"ingredients": ingredients}}
    log4, log5 = tmp_path / "s4" / "samples_rank0.jsonl", tmp_path / "s5" / "samples_rank0.jsonl"
    log4.write_text('{"picks": [[0, 1], [1, 2]]}\n')
    log5.write_text('{"picks": [[0, 3], [1, 4]]}\n')
    pairs = soup_samples(training, [log5, log4])
    assert [names for _, names in pairs] == [["idd_lite_loose", "camvid"], ["camvid", "idd_lite"]]
    assert drawn_by_frames(pairs) == {"camvid": {1, 4}, "idd_lite": {2, 3}}
    with pytest.raises(SSNetError, match=r"s5/final.pt have no samples log"):
        soup_samples(training, [log4])
    stray = tmp_path / "samples_rank0.jsonl"
    stray.write_text(log4.read_text())
    with pytest.raises(SSNetError, match="in none of the soup's stage folders"):
        soup_samples(training, [log4, log5, stray])
    # one stage: the card's own datasets
    assert soup_samples({"datasets": [{"name": "camvid"}]}, [log4]) == [(log4, ["camvid"])]


@pytest.fixture(scope="module")
def idd() -> Path:
    root = SHARED_DATA / "idd_lite"
    if not root.is_dir():
        pytest.skip(f"real IDD-Lite data not present at {root}")
    if default_weights() is None:
        pytest.skip("this installation ships no weights")
    return root


def test_the_calibrated_weights_decide_as_measured(tmp_path: Path, idd: Path) -> None:
    """The shipped weights, calibrated on two IDD-Lite training frames: the chosen offset is
    in the classifier bias and the card, the calibrated weights at offset 0 score what the
    measurement gave for that offset, and frames the samples log lists are never used."""
    from ssnet_ros.datasets import open_dataset
    from ssnet_ros.training.evaluate import evaluate

    log = tmp_path / "samples_rank0.jsonl"
    log.write_text(json.dumps({"step": 0, "picks": [[1, 0], [1, 1], [0, 5]]}) + "\n")
    out = tmp_path / "cal"
    args = ["--weights", str(default_weights()), "--samples", str(log), "--out", str(out),
            "--data", str(SHARED_DATA), "--domain", "idd_lite:train", "--frames", "2",
            "--offsets=-0.5,1", "--min-precision", "0", *NET, "--no-progress"]
    assert main(args) == 0
    report = json.loads((out / "calibration.json").read_text())
    chosen = report["choice"]["offset"]
    rows = report["domains"]["idd_lite/train"]
    assert [r["offset"] for r in rows] == [-0.5, 0.0, 1.0] and report["frames"] == {
        "idd_lite/train": 2}
    recalls = [r["recall"] for r in rows]
    assert recalls == sorted(recalls)  # a larger offset only adds drivable pixels
    card = read_card(out / "calibrated.pt")
    assert card.training["calibration"]["drivable_logit_offset"] == chosen
    before, _ = load_checkpoint(default_weights())
    after, _ = load_checkpoint(out / "calibrated.pt")
    road = card.drivable_ids[0]
    delta = after.state_dict()[CLASSIFIER_BIAS] - before.state_dict()[CLASSIFIER_BIAS]
    assert abs(float(delta[road]) - chosen) < 2e-3
    assert float(delta.abs().sum() - delta[road].abs()) == 0.0  # no other class moved
    # the calibrated weights, measured at offset 0 on the same frames (not 0 and 1: drawn)
    dataset = open_dataset("idd_lite", idd, "train")
    seg = Segmenter(out / "calibrated.pt", device="cpu", input_size=(96, 128), drivable_rule=OFF)
    picked = unseen_frames(len(dataset), {0, 1}, 2)
    assert picked[0] == 2 and len(picked) == 2
    again = measure(seg, dataset, picked, [0.0], progress=False)[0]
    measured = rows[[r["offset"] for r in rows].index(chosen)]
    assert abs(again["iou"] - measured["iou"]) < 2e-3, (again, measured)
    # and offset 0 of the measurement is what ssnet-eval scores for the same frames

    class Two:
        info, split = dataset.info, dataset.split

        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return dataset[picked[i]]

        def name(self, i: int) -> str:
            return dataset.name(picked[i])

    plain = Segmenter(default_weights(), device="cpu", input_size=(96, 128), drivable_rule=OFF)
    torch.manual_seed(0)
    summary, _, _ = evaluate(plain, Two(), progress=False)
    assert abs(summary["drivable"]["iou"] - rows[1]["iou"]) < 1e-6
    # a calibrated checkpoint is not calibrated twice; the output is not overwritten
    assert main(["--weights", str(out / "calibrated.pt"), *args[2:5], str(tmp_path / "x")]) == 2
    assert main(args) == 2


def test_a_domain_of_another_split_is_refused(tmp_path: Path, idd: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "samples_rank0.jsonl"
    log.write_text(json.dumps({"step": 0, "picks": [[1, 0]]}) + "\n")
    assert main(["--weights", str(default_weights()), "--samples", str(log), "--out",
                 str(tmp_path / "o"), "--data", str(SHARED_DATA), "--domain", "idd_lite:holdout",
                 *NET]) == 2
    assert "numbers the frames of the split" in capsys.readouterr().err
