"""``ssnet-fit-trust``: fit a checkpoint's drivable trust model on labelled hold-out frames.

Segments frames of one or more labelled datasets (by default the two hold-outs the shipped
model never trained on: cityscapes_p2p Weimar + Zürich and the idd_lite sequence hold-out) at
the card's automatic input size, each frame also once degraded (heavy blur, over-exposure,
darkness with noise, or haze, in turn), and fits :func:`ssnet_ros.core.trust.fit_trust` on the
even-numbered picks of every dataset; the odd-numbered picks are kept apart for the held-out
figures (Spearman, AUROC for IoU < 70, R²), written with a scatter plot to ``--out``. The
model is written into the card of ``--into`` (a copy of ``--weights``; the same path with
``--overwrite``), atomically.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..core import options as cli
from ..core.checkpoint import _read_payload, read_card
from ..core.fileio import atomic_path, write_json
from ..core.segmenter import Segmenter
from ..core.trust import FEATURES, TrustModel, fit_trust, save_trust_scatter, trust_scores
from ..datasets import DATASETS, open_dataset
from ..errors import SSNetError
from .evaluate import drivable_truth_lut, image_scores, label_space

DEFAULT_DATA = ("cityscapes_p2p:../shared/data/cityscapes_p2p:holdout",
                "idd_lite:../shared/data/idd_lite:holdout")
DEGRADATIONS = ("blur", "overexposed", "dark", "haze")


def degrade(image: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A degraded copy of an RGB frame: heavy Gaussian blur (sigma 1.5-3 % of the width),
    over-exposure (x2.2-3.2 gain), darkness with sensor noise, or haze (60-75 % grey veil);
    the strength drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    x = image.astype(np.float32)
    if kind == "blur":
        sigma = image.shape[1] * rng.uniform(0.015, 0.03)
        return cv2.GaussianBlur(image, (0, 0), sigma)
    if kind == "overexposed":
        x = x * rng.uniform(2.2, 3.2) + 30.0
    elif kind == "dark":
        x = x * rng.uniform(0.12, 0.25) + rng.normal(0.0, 6.0, x.shape)
    elif kind == "haze":
        veil = rng.uniform(0.6, 0.75)
        x = x * (1.0 - veil) + 215.0 * veil
    else:
        raise SSNetError(f"unknown degradation {kind!r} (known: {', '.join(DEGRADATIONS)})")
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Source:
    """One ``NAME:ROOT:SPLIT`` of ``--data``."""

    name: str
    root: Path
    split: str

    @classmethod
    def parse(cls, text: str) -> Source:
        """``NAME:ROOT:SPLIT`` (a dataset reader name, its root, a split)."""
        parts = text.split(":")
        if len(parts) != 3 or not all(parts):
            raise cli.UsageError(f"--data {text!r} is not NAME:ROOT:SPLIT (e.g. "
                                 f"{DEFAULT_DATA[0]})")
        if parts[0] not in DATASETS:
            raise cli.UsageError(f"--data {text!r}: unknown dataset {parts[0]!r}; known: "
                                 f"{', '.join(sorted(DATASETS))}")
        return cls(parts[0], Path(parts[1]), parts[2])


def pick(count: int, frames: int) -> list[int]:
    """``frames`` indices spread evenly over ``count`` frames (all when fewer)."""
    if frames <= 0 or frames >= count:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / (frames - 1))) for i in range(frames)})


def collect(segmenter: Segmenter, source: Source, frames: int, degraded: bool,
            progress: bool) -> list[dict[str, Any]]:
    """Trust features and true drivable IoU of the picked frames of one dataset (and of their
    degraded copies); each row says its dataset, frame, degradation and part (fit/report)."""
    dataset = open_dataset(source.name, source.root, source.split)
    space = label_space(segmenter, dataset)
    lut = drivable_truth_lut(dataset) if space == "drivable" else None
    rows = []
    picks = pick(len(dataset), frames)
    bar = tqdm(total=len(picks) * (2 if degraded else 1), unit="img", disable=not progress,
               desc=f"trust {source.name}/{source.split}", file=sys.stderr)
    for order, index in enumerate(picks):
        image, truth = dataset[index]
        versions = [("clean", image)]
        if degraded:
            kind = DEGRADATIONS[order % len(DEGRADATIONS)]
            versions.append((kind, degrade(image, kind, index)))
        for kind, frame in versions:
            result = segmenter(frame, confidence=False)
            if lut is None:
                _, iou = image_scores(result.labels, truth, segmenter.drivable_ids)
            else:
                _, iou = image_scores(result.drivable.astype(np.uint8), lut[truth], (1,))
            rows.append({"dataset": source.name, "image": dataset.name(index),
                         "degradation": kind, "part": "fit" if order % 2 == 0 else "report",
                         "drivable_iou": iou,
                         "features": [float(v) for v in result.trust_features]})
            bar.update(1)
    bar.close()
    return rows


def held_out_report(model: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Trust figures on the report part: all, clean frames only, and per dataset."""
    report: dict[str, Any] = {}
    held = [r for r in rows if r["part"] == "report"]
    trust = model.predict(np.array([r["features"] for r in held])) if held else np.zeros(0)
    for r, t in zip(held, trust):
        r["drivable_trust"] = float(t)
    iou = np.array([r["drivable_iou"] for r in held])
    report["all"] = trust_scores(trust, iou)
    clean = np.array([r["degradation"] == "clean" for r in held], bool)
    report["clean"] = trust_scores(trust[clean], iou[clean])
    for name in dict.fromkeys(r["dataset"] for r in held):
        sel = np.array([r["dataset"] == name for r in held], bool)
        report[name] = trust_scores(trust[sel], iou[sel])
    return report


def write_checkpoint(weights: Path, into: Path, trust: dict[str, Any], overwrite: bool) -> None:
    """A copy of the checkpoint ``weights`` with ``trust`` in its card, written atomically to
    ``into``; an existing ``into`` (also ``weights`` itself) only with ``overwrite``."""
    if (into.exists() or into.is_symlink()) and not overwrite:
        raise SSNetError(f"output {into} exists; pass --overwrite to replace it")
    if into.exists() and not into.is_file():
        raise SSNetError(f"output {into} is not a file; not replacing it")
    payload = _read_payload(weights)
    card = read_card(weights).replace(trust=trust)
    problems = card.problems()
    if problems:
        raise SSNetError(f"refusing to write {into}: " + "; ".join(problems))
    payload["card"] = card.to_dict()
    with atomic_path(into) as tmp:
        torch.save(payload, tmp)


def fit_and_write(rows: list[dict[str, Any]], info: dict[str, Any], out: Path,
                  weights: Path, into: Path | None, overwrite: bool,
                  seconds: float) -> dict[str, Any]:
    """Fit on the rows of part "fit", score on part "report", write ``out`` (report JSON
    and scatter PNG) and, with ``into``, the checkpoint; returns the held-out figures."""
    fit_rows = [r for r in rows if r["part"] == "fit"]
    info = {**info, "fit_frames": len(fit_rows),
            "fitted": time.strftime("%Y-%m-%d", time.gmtime())}
    model = fit_trust(np.array([r["features"] for r in fit_rows]),
                      np.array([r["drivable_iou"] for r in fit_rows]), info=info)
    report = held_out_report(model, rows)
    held_out = {key: {m: report[key][m] for m in ("frames", "spearman",
                                                   "auroc_iou_below_70", "r2")}
                for key in ("all", "clean")}
    model = TrustModel(model.features, model.mean, model.std, model.weights, model.bias,
                       model.residual_std, {**dict(model.info or {}), "held_out": held_out})
    held = [r for r in rows if r["part"] == "report"]
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_json(tmp / "trust_report.json", {
            "held_out": report, "model": model.to_dict(), "seconds_segmenting": seconds,
            "frames_segmented": len(rows), "features": list(FEATURES), "frames": rows})
        save_trust_scatter(tmp / "trust_scatter.png", [r["drivable_trust"] for r in held],
                           [r["drivable_iou"] for r in held], "held-out frames",
                           [r["dataset"] + ("" if r["degradation"] == "clean"
                                            else " degraded") for r in held])
        if out.exists():  # checked by the caller: --overwrite
            shutil.rmtree(out) if out.is_dir() else out.unlink()
    if into is not None:
        write_checkpoint(weights, into, model.to_dict(), overwrite)
    return report


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-fit-trust."""
    p = cli.parser("ssnet-fit-trust", __doc__)
    cli.add(p, "--weights")
    p.add_argument("--data", action="append", default=None, metavar="NAME:ROOT:SPLIT",
                   help="labelled frames to fit on, repeatable (default: "
                   + " and ".join(DEFAULT_DATA) + ")")
    p.add_argument("--frames", type=int, default=32,
                   help="frames picked evenly from each dataset, half to fit, half to report; "
                   "0: all")
    p.add_argument("--no-degraded", action="store_true",
                   help="do not add a degraded copy (blur, over-exposure, dark, haze) of each "
                   "frame")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for the held-out report (trust_report.json, trust_scatter.png)")
    p.add_argument("--into", type=Path, default=None,
                   help="checkpoint to write with the trust model in its card (a copy of "
                   "--weights; give the --weights path itself with --overwrite to update it); "
                   "none: report only")
    cli.add(p, "--device", "--precision", "--input-height", "--input-width", "--threads",
            "--overwrite", "--no-progress")
    return p


@cli.entry_point("ssnet-fit-trust", interrupted="nothing written")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-fit-trust."""
    args = build_parser().parse_args(argv)
    size = cli.input_size(args)
    sources = [Source.parse(t) for t in (args.data or DEFAULT_DATA)]
    if args.frames < 0 or args.frames == 1:
        raise cli.UsageError(f"--frames must be 0 (all) or at least 2, got {args.frames}")
    if args.out.exists() and not args.overwrite:
        raise SSNetError(f"output {args.out} exists; pass --overwrite to replace it")
    if args.into is not None and args.into.exists() and not args.overwrite:
        raise SSNetError(f"output {args.into} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = Segmenter(args.weights, device=args.device, precision=args.precision,
                          input_size=size)
    assert segmenter.weights is not None
    start = time.perf_counter()
    rows = [row for source in sources for row in
            collect(segmenter, source, args.frames, not args.no_degraded, not args.no_progress)]
    seconds = time.perf_counter() - start
    info = {"weights": segmenter.weights.name,
            "data": [f"{s.name}:{s.split}" for s in sources],
            "frames_per_dataset": args.frames, "degraded": not args.no_degraded,
            "input_size": list(size) if size else "automatic"}
    report = fit_and_write(rows, info, args.out, segmenter.weights, args.into, args.overwrite,
                           seconds)
    fmt = (lambda v: "n/a" if v is None else f"{v:.3f}")
    for key in ("all", "clean"):
        s = report[key]
        print(f"held-out {key}: {s['frames']} frames ({s['frames_iou_below_70']} with IoU < 70): "
              f"AUROC {fmt(s['auroc_iou_below_70'])}, Spearman {fmt(s['spearman'])}, "
              f"R2 {fmt(s['r2'])}")
    print(f"segmented {len(rows)} frames in {seconds:.0f} s; report in {args.out}"
          + (f"; trust model written into {args.into}" if args.into else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
