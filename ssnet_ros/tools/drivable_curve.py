"""``ssnet-drivable-curve``: drivable precision/recall/IoU as a function of the confidence
floor, with and without the connected pass, on held-out labelled frames of each domain.

    ssnet-drivable-curve --out runs/drivable_curve
    python -m ssnet_ros.tools.drivable_curve --weights runs/stage3/best.pt --out DIR

The network runs once per frame; every floor and both connected settings are then decided
from its labels, confidence and fallback labels exactly as the Segmenter decides them
(:mod:`ssnet_ros.core.drivable`). Drivable truth as ssnet-eval scores it: the dataset's
drivable classes, its ``drivable_ignore`` classes (Cityscapes parking, rail track) and void
left out. Writes curve.json (every figure), curve.md (tables and the choices) and curve.png
(one precision/recall plot per domain). The choices: the (connected, floor) with the best
mean drivable IoU over the domains, and per connected setting the highest floor that costs
less than 1 point of recall in every domain against no rule at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..core import options as cli
from ..core.drivable import OFF, apply_floor, keep_connected
from ..core.fileio import atomic_path, write_json, write_text
from ..core.segmenter import Segmenter
from ..datasets import IGNORE_INDEX, SegmentationDataset, open_dataset
from ..errors import SSNetError

DEFAULT_DOMAINS = ("idd_lite:holdout", "cityscapes_p2p:holdout")
DEFAULT_FLOORS = "0,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
DEFAULT_EVERY = 4
"""Frames measured: every 4th of each hold-out (the network dominates the time; the default
command must finish within 10 minutes on two busy CPU cores)."""
RECALL_BUDGET = 0.01
"""Largest recall loss (in every domain) the "precision at little recall" choice accepts."""


def parse_floors(text: str) -> list[float]:
    """``0,0.5,0.7`` -> sorted unique floors in 0..1 (0 is always included)."""
    try:
        floors = {float(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise cli.UsageError(f"--floors {text!r} is not a comma-separated list of numbers") \
            from None
    if any(not 0.0 <= f <= 1.0 for f in floors):
        raise cli.UsageError(f"--floors {text!r}: every floor must be within 0..1")
    return sorted(floors | {0.0})


def parse_domain(text: str, data: Path) -> tuple[str, Path, str]:
    """``NAME:SPLIT`` or ``NAME:SPLIT:ROOT`` -> (dataset name, root, split); the root
    defaults to ``data``/NAME."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise cli.UsageError(f"--domain {text!r} is not NAME:SPLIT[:ROOT] "
                             f"(e.g. idd_lite:holdout)")
    root = Path(parts[2]) if len(parts) == 3 else data / parts[0]
    return parts[0], root, parts[1]


def truth_lut(dataset: SegmentationDataset, segmenter: Segmenter) -> np.ndarray:
    """256 uint8 by dataset label: 1 drivable, 0 not, IGNORE_INDEX left out (as ssnet-eval
    scores the drivable mask)."""
    info = dataset.info
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[:len(info.class_names)] = 0
    if tuple(info.class_names) == tuple(segmenter.class_names):
        lut[list(segmenter.drivable_ids)] = 1
        return lut
    if not info.drivable_classes:
        raise SSNetError(f"{info.name} names no drivable classes: its drivable mask cannot "
                         f"be scored")
    for name in info.drivable_classes:
        lut[info.class_names.index(name)] = 1
    for name in info.drivable_ignore:
        lut[info.class_names.index(name)] = IGNORE_INDEX
    return lut


def counts(mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[tp, fp, fn] of a bool drivable ``mask`` against ``truth`` (1, 0, IGNORE_INDEX)."""
    valid = truth != IGNORE_INDEX
    pred, true = mask[valid], truth[valid] == 1
    return np.array([np.count_nonzero(pred & true), np.count_nonzero(pred & ~true),
                     np.count_nonzero(~pred & true)], np.int64)


def scores(c: Sequence[int]) -> dict[str, float | None]:
    """precision, recall and IoU of [tp, fp, fn] (None when undefined)."""
    tp, fp, fn = (int(v) for v in c)
    return {"precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "iou": tp / (tp + fp + fn) if tp + fp + fn else None,
            "tp": tp, "fp": fp, "fn": fn}


def frames(count: int, every: int, limit: int | None) -> list[int]:
    """Indices of the frames measured: every ``every``-th of ``count``, at most ``limit``."""
    return list(range(0, count, every))[:limit]


class Tally:
    """Drivable [tp, fp, fn] per floor, without (``plain``) and with (``connected``) the
    connected pass, over the frames added; ``emptied``: frames with drivable truth whose mask
    the rule left empty."""

    MODES = ("plain", "connected")

    def __init__(self, floors: Sequence[float], drivable_lut: np.ndarray) -> None:
        self.floors, self.lut = list(floors), drivable_lut
        self.total = {m: np.zeros((len(self.floors), 3), np.int64) for m in self.MODES}
        self.emptied = {m: [0] * len(self.floors) for m in self.MODES}
        self.images = 0

    def add(self, labels: np.ndarray, confidence: np.ndarray, fallback: np.ndarray,
            truth: np.ndarray) -> None:
        """One frame: the network's HxW labels, confidence and fallback labels, and its
        drivable truth (1, 0, IGNORE_INDEX), decided as the Segmenter decides."""
        has_road = bool((truth == 1).any())
        for j, floor in enumerate(self.floors):
            floored = apply_floor(labels, confidence, fallback, self.lut, floor)
            for mode, decided in (("plain", floored),
                                  ("connected", keep_connected(floored, fallback, self.lut))):
                mask = self.lut[decided]
                self.total[mode][j] += counts(mask, truth)
                self.emptied[mode][j] += int(has_road and not mask.any())
        self.images += 1

    def result(self) -> dict[str, Any]:
        """Figures per mode and floor."""
        return {"images": self.images, "floors": self.floors, **{
            mode: [{"floor": f, **scores(self.total[mode][j]), "emptied": self.emptied[mode][j]}
                   for j, f in enumerate(self.floors)] for mode in self.MODES}}


def measure(segmenter: Segmenter, dataset: SegmentationDataset, floors: Sequence[float], *,
            every: int = 1, limit: int | None = None, progress: bool = True
            ) -> dict[str, Any]:
    """The :class:`Tally` of every ``every``-th frame of ``dataset`` (at most ``limit``)."""
    lut = truth_lut(dataset, segmenter)
    tally = Tally(floors, segmenter.drivable_lut)
    picked = frames(len(dataset), every, limit)
    bar = tqdm(total=len(picked), desc=f"{dataset.info.name}/{dataset.split}", unit="img",
               disable=not progress, file=sys.stderr)
    for i in picked:
        image, labels_truth = dataset[i]
        labels, conf, fallback = segmenter.network_outputs(
            torch.from_numpy(image[None]), confidence=True, fallback=True)
        tally.add(labels[0], conf[0], fallback[0], lut[labels_truth])
        bar.update(1)
    bar.close()
    return {"dataset": dataset.info.name, "split": dataset.split, "every": every,
            **tally.result()}


def choose(domains: dict[str, dict[str, Any]], floors: Sequence[float]) -> dict[str, Any]:
    """The defaults the measurement supports (see the module docstring)."""
    def mean_iou(mode: str, j: int) -> float:
        return float(np.mean([d[mode][j]["iou"] or 0.0 for d in domains.values()]))

    means = {mode: [mean_iou(mode, j) for j in range(len(floors))]
             for mode in ("plain", "connected")}
    best = max(((mode, j) for mode in means for j in range(len(floors))),
               key=lambda mj: (round(means[mj[0]][mj[1]], 6), mj[0] == "plain", -mj[1]))
    cheap: dict[str, Any] = {}
    for mode in ("plain", "connected"):
        ok = [j for j in range(len(floors))
              if all((d["plain"][0]["recall"] or 0.0) - (d[mode][j]["recall"] or 0.0)
                     < RECALL_BUDGET for d in domains.values())]
        if ok:
            j = max(ok)
            cheap[mode] = {"floor": floors[j], "mean_iou": means[mode][j], "precision": {
                name: d[mode][j]["precision"] for name, d in domains.items()}}
        else:
            cheap[mode] = None
    return {"mean_iou": means,
            "best_mean_iou": {"connected": best[0] == "connected", "floor": floors[best[1]],
                              "mean_iou": means[best[0]][best[1]]},
            "within_1pt_recall": cheap}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def markdown(report: dict[str, Any]) -> str:
    """curve.md: a table per domain, the mean IoU per floor and the choices."""
    lines = [f"# Drivable decision curve: {report['model']} ({report['weights']})", "",
             "Drivable precision, recall and IoU (%) by confidence floor, without and with "
             "the connected pass.", ""]
    for key, d in report["domains"].items():
        lines += [f"## {key} ({d['images']} images, one frame in {d['every']})", "",
                  "| floor | precision | recall | IoU | connected: precision | recall | IoU "
                  "| frames emptied (plain / connected) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p, c in zip(d["plain"], d["connected"]):
            lines.append(f"| {p['floor']:.2f} | {_pct(p['precision'])} | {_pct(p['recall'])} "
                         f"| {_pct(p['iou'])} | {_pct(c['precision'])} | {_pct(c['recall'])} "
                         f"| {_pct(c['iou'])} | {p['emptied']} / {c['emptied']} |")
        lines.append("")
    ch = report["choice"]
    lines += ["## Mean drivable IoU over the domains", "",
              "| floor | plain | connected |", "|---:|---:|---:|"]
    for j, f in enumerate(report["floors"]):
        lines.append(f"| {f:.2f} | {_pct(ch['mean_iou']['plain'][j])} "
                     f"| {_pct(ch['mean_iou']['connected'][j])} |")
    b = ch["best_mean_iou"]
    lines += ["", f"Best mean drivable IoU: floor {b['floor']:.2f}, connected pass "
              f"{'on' if b['connected'] else 'off'} ({_pct(b['mean_iou'])}).", ""]
    for mode, c in ch["within_1pt_recall"].items():
        if c is None:
            lines.append(f"- {mode}: no floor keeps the recall loss under "
                         f"{100 * RECALL_BUDGET:.0f} point in every domain.")
        else:
            prec = ", ".join(f"{k} {_pct(v)}" for k, v in c["precision"].items())
            lines.append(f"- {mode}: highest floor within {100 * RECALL_BUDGET:.0f} point of "
                         f"recall everywhere: {c['floor']:.2f} (precision {prec}; mean IoU "
                         f"{_pct(c['mean_iou'])}).")
    return "\n".join(lines) + "\n"


def save_png(path: Path, report: dict[str, Any]) -> None:
    """One precision/recall plot per domain: a line per connected setting, floors marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = report["domains"]
    fig, axes = plt.subplots(1, len(domains), figsize=(5.2 * len(domains), 4.6), squeeze=False)
    for ax, (key, d) in zip(axes[0], domains.items()):
        for mode, style in (("plain", "o-"), ("connected", "s--")):
            pts = [(p["recall"], p["precision"], p["floor"]) for p in d[mode]
                   if p["recall"] is not None and p["precision"] is not None]
            ax.plot([100 * r for r, _, _ in pts], [100 * p for _, p, _ in pts], style,
                    label=f"{mode} (floor 0 .. {pts[-1][2]:.2f})" if pts else mode)
            for r, p, f in pts:
                ax.annotate(f"{f:g}", (100 * r, 100 * p), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_title(f"{key} ({d['images']} images)")
        ax.set_xlabel("drivable recall %")
        ax.set_ylabel("drivable precision %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"drivable mask vs confidence floor: {report['model']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-drivable-curve."""
    p = cli.parser("ssnet-drivable-curve", __doc__)
    cli.add(p, "--weights")
    p.add_argument("--out", required=True, type=Path, help="folder for the curve")
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="folder holding one folder per dataset (the domains' default roots)")
    p.add_argument("--domain", action="append", default=None, metavar="NAME:SPLIT[:ROOT]",
                   help=f"a labelled hold-out to measure (repeat for several; default: "
                        f"{' '.join(DEFAULT_DOMAINS)})")
    p.add_argument("--floors", default=DEFAULT_FLOORS,
                   help="confidence floors to measure, comma-separated")
    p.add_argument("--every", type=int, default=DEFAULT_EVERY,
                   help="measure every Nth frame of each hold-out (1: all)")
    cli.add(p, "--device", "--precision", "--input-height", "--input-width", "--limit",
            "--threads", "--overwrite", "--no-progress")
    return p


@cli.entry_point("ssnet-drivable-curve", interrupted="no curve written")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-drivable-curve."""
    args = build_parser().parse_args(argv)
    floors = parse_floors(args.floors)
    size = cli.input_size(args)
    domains = [parse_domain(d, args.data) for d in args.domain or DEFAULT_DOMAINS]
    if args.every < 1:
        raise cli.UsageError(f"--every must be >= 1, got {args.every}")
    if args.out.exists() and not args.overwrite:
        raise SSNetError(f"output {args.out} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets = [open_dataset(name, root, split) for name, root, split in domains]
    segmenter = Segmenter(args.weights, device=args.device, precision=args.precision,
                          input_size=size, drivable_rule=OFF)
    results = {f"{d.info.name}/{d.split}": measure(segmenter, d, floors,
                                                   every=args.every,
                                                   limit=args.limit or None,
                                                   progress=not args.no_progress)
               for d in datasets}
    report = {"weights": str(segmenter.weights), "model": segmenter.card.model,
              "floors": floors, "input_size": list(size) if size else "automatic",
              "domains": results, "choice": choose(results, floors)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "curve.json", report)
    write_text(args.out / "curve.md", markdown(report))
    save_png(args.out / "curve.png", report)
    print(markdown(report))
    print(f"curve written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
