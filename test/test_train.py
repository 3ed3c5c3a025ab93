"""Training on real images must overfit a few of them; resume and outputs work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssnet_ros import Segmenter, read_card
from ssnet_ros.checkpoint import build_from_card
from ssnet_ros.datasets import open_dataset
from ssnet_ros.evaluate import evaluate
from ssnet_ros.train import class_weights, lr_factor, main

from conftest import CAMVID_ROOT, write_camvid_fixture


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real CamVid when ../shared/data is present, else a written CamVid-layout fixture."""
    if (CAMVID_ROOT / "train").is_dir():
        return CAMVID_ROOT
    return write_camvid_fixture(tmp_path_factory.mktemp("camvid"), size=(360, 480))


@pytest.mark.slow
def test_short_run_overfits_a_few_real_images(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--model", "ssnet", "--dataset", "camvid", "--root", str(data_root),
              "--out", str(out), "--limit", "4", "--batch-size", "4", "--crop", "128", "176",
              "--scale", "0.35", "0.35", "--steps-per-epoch", "12", "--lr", "2e-3",
              "--warmup-steps", "3", "--class-weights", "none", "--val-split", "train",
              "--val-limit", "2", "--val-every", "100", "--no-progress", "--seed", "1"]
    assert main(common + ["--epochs", "5", "--time-budget-min", "0.01"]) == 0
    first = json.loads((out / "history.json").read_text())
    assert len(first) == 1  # the time budget stopped it after one epoch, checkpointed
    assert main(common + ["--epochs", "5", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < 0.6 * losses[0], losses
    assert (out / "curves.png").stat().st_size > 1000
    card = read_card(out / "best.pt")
    assert card.metrics["miou"] is not None and card.class_names[3] == "Road"
    assert card.mean == (123.68, 116.779, 103.939) and card.train_size == (360, 480)

    # training-set mIoU at the training scale, through the same inference path as the node
    model = build_from_card(card)
    model.load_state_dict(torch.load(out / "last.pt", weights_only=True)["model"])
    seg = Segmenter.from_model(model, card, device="cpu", input_size=(126, 168))
    train_set = open_dataset("camvid", data_root, "train")
    summary, _, _ = evaluate(seg, train_set, limit=4, progress=False)
    assert summary["pixel_accuracy"] > 0.75, summary
    assert summary["miou"] > 0.3, summary
    assert summary["drivable"]["iou"] > 0.5, summary  # an untrained model scores about 0.05


def test_median_frequency_balancing_by_hand() -> None:
    a = np.array([[0, 0, 0, 1]], np.uint8)  # class 0: 3 of 4 px, class 1: 1 of 4
    b = np.array([[0, 0, 255, 255]], np.uint8)
    w = class_weights([(None, a), (None, b)], 3, "mfb")  # type: ignore[list-item]
    # freq0 = 5 / 8, freq1 = 1 / 4, class 2 absent; median of present = (5/8 + 1/4) / 2
    med = (5 / 8 + 1 / 4) / 2
    np.testing.assert_allclose(w.numpy(), [med / (5 / 8), med / (1 / 4), 0.0], rtol=1e-6)
    s = class_weights([(None, a), (None, b)], 3, "sqrt-mfb")  # type: ignore[list-item]
    np.testing.assert_allclose(s.numpy(), np.sqrt(w.numpy()), rtol=1e-6)
    assert class_weights([(None, a)], 3, "none") is None  # type: ignore[list-item]


def test_schedule_warms_up_then_decays() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)
    assert lr_factor(55, 100, 10) < lr_factor(30, 100, 10)


def test_bad_dataset_root_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture
                                              ) -> None:
    assert main(["--root", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
