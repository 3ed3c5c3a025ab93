"""ssnet-eval: report files, label-space checks, and the shipped model's accuracy order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssnet_ros import Segmenter, default_weights
from ssnet_ros.training.evaluate import main
from ssnet_ros.core.segmenter import shipped_weights


def test_report_files(ssnet_checkpoint_varied: Path, camvid_fixture: Path,
                      tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["--weights", str(ssnet_checkpoint_varied), "--dataset", "camvid",
                 "--root", str(camvid_fixture), "--split", "val", "--out", str(out),
                 "--device", "cpu", "--overlays", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["split"] == "val"
    assert len(metrics["confusion_matrix"]) == 11
    # the fixture has 64 void pixels per 48x64 image: they are not counted
    assert metrics["pixels"] == 2 * (48 * 64 - 48 * 2)
    assert 0.0 <= metrics["miou"] <= 1.0
    assert "| Road |" in (out / "metrics.md").read_text()
    assert (out / "confusion.png").stat().st_size > 1000
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 2 and all(p.name[:3] in ("00_", "01_") for p in overlays)
    assert {p.name[3:] for p in overlays} <= {f"{n}.png" for n in ("0001TP_000000",
                                                                     "0001TP_000001",
                                                                     "0001TP_000002")}


def test_other_label_spaces_score_the_drivable_mask(ssnet_checkpoint: Path, tmp_path: Path
                                                  ) -> None:
    """KITTI road labels are road / not road: a CamVid model is scored on its drivable mask."""
    import cv2
    import numpy as np

    root = tmp_path / "kitti"
    for sub in ("image_2", "gt_image_2"):
        (root / "training" / sub).mkdir(parents=True)
    gt = np.zeros((4, 4, 3), np.uint8)
    gt[:2] = (255, 0, 0)  # BGR of magenta 255,0,255 is the same
    gt[:2, :, 1] = 0
    gt[:2, :, 2] = 255
    gt[2:] = (0, 0, 255)  # BGR red = not road
    cv2.imwrite(str(root / "training" / "image_2" / "um_000000.png"), np.zeros((4, 4, 3)))
    cv2.imwrite(str(root / "training" / "gt_image_2" / "um_road_000000.png"), gt)
    out = tmp_path / "o"
    assert main(["--weights", str(ssnet_checkpoint), "--dataset", "kitti_road", "--root",
                 str(root), "--split", "all", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_space"] == "drivable" and metrics["miou"] is None
    assert metrics["confusion_matrix"][1][0] + metrics["confusion_matrix"][1][1] == 8
    assert sum(map(sum, metrics["confusion_matrix"])) == 16
    assert "| drivable |" in (out / "metrics.md").read_text()


def claimed_miou(seg: Segmenter) -> float:
    """The CamVid val mIoU the checkpoint's card claims (either card generation)."""
    metrics = seg.card.metrics
    return metrics["validation"]["camvid/val"]["miou"] if "validation" in metrics \
        else metrics["miou"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(shipped_weights()) or ["none shipped"])
def test_shipped_models_on_real_camvid_val(name: str, camvid_root: Path, tmp_path: Path
                                           ) -> None:
    if default_weights() is None or name not in shipped_weights():
        pytest.skip("this checkout ships no weights yet (see the training issue)")
    seg = Segmenter(name, device="cpu")
    out = tmp_path / "report"
    args = ["--weights", name] if name != default_weights().stem else []  # default: no flag
    assert main([*args, "--dataset", "camvid", "--root", str(camvid_root), "--split", "val",
                 "--out", str(out), "--limit", "6", "--overlays", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    claimed = claimed_miou(seg)
    # six images are a noisy sample of the 101: same order as the claimed val mIoU
    assert metrics["miou"] > claimed - 0.15, (metrics["miou"], claimed)
    assert metrics["drivable"]["iou"] > 0.8


def test_existing_output_needs_overwrite_and_stale_files_go(
        ssnet_checkpoint_varied: Path, camvid_fixture: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    args = ["--weights", str(ssnet_checkpoint_varied), "--dataset", "camvid", "--root",
            str(camvid_fixture), "--split", "val", "--out", str(out), "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    (out / "stale.txt").write_text("from an earlier run")
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "metrics.json").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("keep")
    assert main(args[:-5] + ["--out", str(other), "--device", "cpu", "--overwrite"]) == 2
    assert (other / "thesis.tex").read_text() == "keep"


def test_panels_are_the_worst_and_a_spread() -> None:
    from ssnet_ros.training.evaluate import choose_panels

    scores = [0.9, 0.1, 0.5, 0.95, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4]
    chosen = choose_panels(scores, 4)
    assert chosen[:2] == [1, 6]  # the two worst first
    assert 3 in chosen and len(set(chosen)) == 4  # the best is in the spread
    assert choose_panels(scores, 0) == [] and sorted(choose_panels(scores, 20)) == list(range(10))


def test_scoring_a_split_the_model_trained_on_warns(
        ssnet_checkpoint: Path, camvid_fixture: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    """The card knows its training data (here: CamVid train): scoring there says so on the
    console, in metrics.json and metrics.md; a held-out split does not."""
    common = ["--weights", str(ssnet_checkpoint), "--dataset", "camvid", "--root",
              str(camvid_fixture), "--device", "cpu", "--overlays", "0", "--no-progress"]
    assert main([*common, "--split", "train", "--out", str(tmp_path / "train")]) == 0
    captured = capsys.readouterr()
    assert "warning: camvid/train was part of this model's training data" in captured.err
    assert "trained on data licensed as: CamVid" in captured.out
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert "training data" in metrics["trained_on_split"]
    assert "**Warning:** camvid/train" in (tmp_path / "train" / "metrics.md").read_text()
    assert main([*common, "--split", "val", "--out", str(tmp_path / "val")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "val" / "metrics.json").read_text())[
        "trained_on_split"] is None
