"""``ssnet-compare-runs``: training runs side by side (val mIoU per epoch, loss curves).

    ssnet-compare-runs runs/ssnet runs/ssnet_scratch runs/fcn8s --out runs/compare

Reads each run folder's ``config.json`` and ``history.json`` (written by ``ssnet-train``) and
writes ``runs.md`` (one row per run: model, encoder initialisation, val mIoU at every validated
epoch, best), ``runs.json`` and ``runs.png`` (training loss and val mIoU against the epoch).
Used for the VGG-16 initialisation vs training-from-scratch comparison in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SSNetError
from ..core import options as cli
from ..core.fileio import check_file_output, write_json, write_text
from .plots import save_runs_png


@dataclass(frozen=True)
class Run:
    """One ``ssnet-train`` run folder."""

    label: str
    config: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def init(self) -> str:
        """How the encoder started: ``VGG-16`` or ``scratch``."""
        return "VGG-16" if self.config.get("vgg_weights_file") else "scratch"

    @property
    def val(self) -> dict[int, float]:
        """Validated epoch -> val mIoU (0..1)."""
        return {h["epoch"]: h["val_miou"] for h in self.history
                if h.get("val_miou") is not None}


def load_run(folder: str | Path) -> Run:
    """Read a run folder; raise SSNetError naming the folder when it is not one."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        history = json.loads((folder / "history.json").read_text())
    except FileNotFoundError as exc:
        raise SSNetError(f"{folder} is not an ssnet-train run folder: no "
                         f"{Path(exc.filename).name}") from None
    except json.JSONDecodeError as exc:
        raise SSNetError(f"{folder} has an unreadable run file: {exc}") from None
    if not isinstance(history, list) or not all("epoch" in h for h in history):
        raise SSNetError(f"{folder}/history.json is not a list of epochs")
    return Run(folder.name, config, history)


def runs_table(runs: Sequence[Run]) -> str:
    """Markdown: one row per run, a column per validated epoch (val mIoU %), and the best."""
    epochs = sorted({e for run in runs for e in run.val})
    head = ["run", "model", "encoder init", "epochs trained"] + [f"ep {e}" for e in epochs] + \
        ["best val mIoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        val = run.val
        cells = [run.label, str(run.config.get("model", "?")), run.init,
                 str(max((h["epoch"] for h in run.history), default=0))]
        cells += [f"{100 * val[e]:.1f}" if e in val else "" for e in epochs]
        cells.append(f"{100 * max(val.values()):.1f}" if val else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser("ssnet-compare-runs", __doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="ssnet-train run folders")
    p.add_argument("--out", required=True, help="folder for runs.md, runs.json, runs.png")
    cli.add(p, "--overwrite")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-compare-runs."""
    args = parse_args(argv)
    out = Path(args.out)
    try:
        for name in ("runs.md", "runs.json", "runs.png"):
            check_file_output(out / name, args.overwrite)
        runs = [load_run(folder) for folder in args.runs]
    except SSNetError as exc:
        print(f"ssnet-compare-runs: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    table = runs_table(runs)
    write_text(out / "runs.md", table + "\n")
    write_json(out / "runs.json", [{"run": r.label, "folder": str(f), "model":
                                    r.config.get("model"), "init": r.init, "val_miou": r.val,
                                    "history": r.history} for r, f in zip(runs, args.runs)])
    save_runs_png(out / "runs.png", {r.label: r.history for r in runs})
    print(table)
    print(f"wrote {out / 'runs.md'}, runs.json, runs.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
