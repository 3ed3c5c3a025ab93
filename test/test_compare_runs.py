"""ssnet-compare-runs: the run table, its picture, and a clear error for a non-run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssnet_ros.training.compare_runs import load_run, main, runs_table


def write_run(folder: Path, *, vgg: str | None, val: dict[int, float], epochs: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": "ssnet", "vgg_weights_file": vgg}))
    history = [{"epoch": e, "train_loss": 2.0 / e, **({"val_miou": val[e]} if e in val else {})}
               for e in range(1, epochs + 1)]
    (folder / "history.json").write_text(json.dumps(history))
    return folder


def test_table_and_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vgg = write_run(tmp_path / "vgg", vgg="/x/vgg.h5", val={2: 0.40, 4: 0.55}, epochs=4)
    scratch = write_run(tmp_path / "scratch", vgg=None, val={2: 0.21}, epochs=3)
    table = runs_table([load_run(vgg), load_run(scratch)]).splitlines()
    assert table[0] == ("| run | model | encoder init | epochs trained | ep 2 | ep 4 "
                        "| best val mIoU |")
    assert table[2] == "| vgg | ssnet | VGG-16 | 4 | 40.0 | 55.0 | 55.0 |"
    assert table[3] == "| scratch | ssnet | scratch | 3 | 21.0 |  | 21.0 |"
    out = tmp_path / "cmp"
    assert main([str(vgg), str(scratch), "--out", str(out)]) == 0
    assert (out / "runs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs.md").read_text().splitlines() == table
    assert json.loads((out / "runs.json").read_text())[1]["init"] == "scratch"


def test_not_a_run_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "nothing is not an ssnet-train run folder: no config.json" in capsys.readouterr().err
