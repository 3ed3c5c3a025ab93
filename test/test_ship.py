"""ssnet-ship --stage: a stage ships only when it beats the shipped weights on the declared
criterion, and its card keeps the lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssnet_ros.core.checkpoint import read_card
from ssnet_ros.training.ship import main as ship_main
from ssnet_ros.errors import SSNetError
from ssnet_ros.training.ship import read_sheet, sheet_check, stage_criterion


def _sheet(path: Path, shares: list[float], ego: list[float]) -> Path:
    """An ssnet-sheet JSON of frames a.png, b.png, ... with these figures."""
    frames = [{"image": f"{chr(97 + i)}.png", "drivable_share": s, "ego_lane_drivable": e}
              for i, (s, e) in enumerate(zip(shares, ego))]
    path.write_text(json.dumps({"weights": "w.pt", "frames": frames}))
    return path

def _eval(folder: Path, key: str, iou: float, precision: float, miou: float = 0.6,
          road: float = 0.9) -> Path:
    dataset, split = key.split("/")
    data = {"dataset": dataset, "split": split, "images": 10,
            "label_space": "classes" if dataset == "camvid" else "drivable",
            "miou": miou if dataset == "camvid" else None,
            "per_class_iou": {"Sky": 0.9, "Road": road, "Pavement": 0.7}
            if dataset == "camvid" else {},
            "drivable": {"iou": iou, "precision": precision, "recall": 0.95, "f1": 0.9}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset}_{split}.json"
    path.write_text(json.dumps(data))
    return path


def _figs(iou_idd: float, iou_cs: float, prec_cs: float, miou: float = 0.6,
          road: float = 0.9) -> dict:
    out = {}
    for key, iou, prec in (("idd_lite/holdout", iou_idd, 0.95),
                           ("cityscapes_p2p/holdout", iou_cs, prec_cs)):
        out[key] = {"drivable": {"iou": iou, "precision": prec}}
    out["camvid/val"] = {"miou": miou, "per_class_iou": {"Road": road},
                         "drivable": {"iou": road, "precision": 0.97}}
    return out


def test_criterion_score_and_floors() -> None:
    base = _figs(0.87, 0.80, 0.88)
    better = stage_criterion(_figs(0.87, 0.85, 0.93), base)
    assert better["passed"] and better["score"] == pytest.approx(0.86)
    assert not stage_criterion(_figs(0.86, 0.80, 0.93), base)["passed"]  # not above
    low = stage_criterion(_figs(0.90, 0.90, 0.85), base)  # precision fell below both floors
    assert not low["passed"] and "precision" in low["failures"][0]
    forgot = stage_criterion(_figs(0.90, 0.90, 0.93, miou=0.55), base)
    assert not forgot["passed"] and "camvid/val mIoU" in forgot["failures"][0]
    collapsed = stage_criterion(_figs(0.90, 0.90, 0.93, road=0.8), base)
    assert any("Road IoU" in f for f in collapsed["failures"])
    # without CamVid val figures the hold-outs are still judged, and nothing passes
    unjudged = {k: v for k, v in _figs(0.87, 0.85, 0.93).items() if k != "camvid/val"}
    good = stage_criterion(unjudged, base)
    assert not good["passed"] and not good["failures"] and not good["camvid_judged"]
    unjudged["idd_lite/holdout"]["drivable"]["iou"] = 0.70
    assert "not above the shipped" in stage_criterion(unjudged, base)["failures"][0]
    with pytest.raises(SSNetError, match="needs ssnet-eval figures of idd_lite/holdout"):
        stage_criterion({k: v for k, v in unjudged.items() if k != "idd_lite/holdout"}, base)


def test_stage_ships_only_when_better_and_records_lineage(
        tmp_path: Path, ssnet_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = stage = ssnet_checkpoint
    old = [_eval(tmp_path / "old", "idd_lite/holdout", 0.87, 0.95),
           _eval(tmp_path / "old", "cityscapes_p2p/holdout", 0.80, 0.91),
           _eval(tmp_path / "old", "camvid/val", 0.9, 0.97)]
    worse = [_eval(tmp_path / "worse", "idd_lite/holdout", 0.80, 0.95),
             _eval(tmp_path / "worse", "cityscapes_p2p/holdout", 0.80, 0.91),
             _eval(tmp_path / "worse", "camvid/val", 0.9, 0.97)]
    better = [_eval(tmp_path / "new", "idd_lite/holdout", 0.88, 0.95),
              _eval(tmp_path / "new", "cityscapes_p2p/holdout", 0.85, 0.93),
              _eval(tmp_path / "new", "camvid/val", 0.9, 0.97)]
    out = tmp_path / "out.pt"
    base_sheet = _sheet(tmp_path / "base_sheet.json", [0.3, 0.2], [1.0, 0.95])
    sheet = _sheet(tmp_path / "sheet.json", [0.28, 0.21], [1.0, 0.93])
    more = _sheet(tmp_path / "more.json", [0.31, 0.21], [1.0, 0.95])
    base = [str(stage), "--selection", str(shipped), "--stage", "stage 3", "--out", str(out),
            "--baseline-sheet", str(base_sheet), "--baseline-eval", *map(str, old)]
    assert ship_main(base + ["--eval", *map(str, better)]) == 2  # no --sheet
    args = base + ["--sheet", str(sheet), "--eval"]
    assert ship_main(args + list(map(str, worse))) == 2 and not out.exists()
    # no CamVid val figures: a stage that fails the hold-outs is refused for that...
    assert ship_main(args + list(map(str, worse[:2]))) == 2
    assert "mean hold-out drivable IoU" in capsys.readouterr().err
    # ... and one that passes them cannot ship without them
    assert ship_main(args + list(map(str, better[:2]))) == 2 and not out.exists()
    assert "needs ssnet-eval figures of camvid/val" in capsys.readouterr().err
    # better hold-outs, but more of the KITTI frames marked
    assert ship_main(base + ["--sheet", str(more), "--eval", *map(str, better)]) == 2
    assert not out.exists()
    assert ship_main(args + list(map(str, better))) == 0
    card = read_card(out)
    stages = card.training["stages"]
    assert [s["name"] for s in stages] == ["shipped before staged training", "stage 3"]
    assert stages[1]["holdout"]["cityscapes_p2p/holdout"]["drivable"]["iou"] == 0.85
    assert card.metrics["stage"]["criterion"]["passed"]
    assert card.metrics["stage"]["criterion"]["kitti_sheet"]["drivable_share"] == \
        pytest.approx(0.245)
    assert ship_main(args + list(map(str, better))) == 2  # exists, no --overwrite


def test_the_kitti_sheet_check(tmp_path: Path) -> None:
    base = read_sheet(_sheet(tmp_path / "b.json", [0.3, 0.2, 0.1], [1.0, 0.85, 0.95]))
    fewer = sheet_check(read_sheet(_sheet(tmp_path / "s.json", [0.25, 0.2, 0.1],
                                          [1.0, 0.8, 0.92])), base)
    assert not fewer["failures"] and fewer["drivable_share"] == pytest.approx(0.55 / 3)
    holed = sheet_check(read_sheet(_sheet(tmp_path / "h.json", [0.25, 0.2, 0.1],
                                          [1.0, 0.8, 0.89])), base)
    assert holed["new_ego_lane_holes"] == ["c.png"] and len(holed["failures"]) == 1
    more = sheet_check(read_sheet(_sheet(tmp_path / "m.json", [0.3, 0.21, 0.1],
                                         [1.0, 0.9, 0.95])), base)
    assert "drivable share 20.3 % above the shipped 20.0 %" in more["failures"][0]
    with pytest.raises(SSNetError, match="not of the same frames"):
        sheet_check(read_sheet(_sheet(tmp_path / "o.json", [0.3], [1.0])), base)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SSNetError, match="bad.json is not an ssnet-sheet JSON"):
        read_sheet(tmp_path / "bad.json")
