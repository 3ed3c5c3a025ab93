"""``ssnet-eval``: score a checkpoint on a dataset split at the dataset's native resolution."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..datasets import IGNORE_INDEX, DATASETS, SegmentationDataset, open_dataset
from ..errors import SSNetError
from ..core import options as cli
from ..core.fileio import atomic_path, write_json, write_png, write_text
from ..core.metrics import confusion_matrix, image_scores, markdown_report, summarize
from .plots import save_confusion_png
from ..core.segmenter import Segmenter
from ..core.trust import save_trust_scatter, trust_scores
from ..core.visualize import truth_panel as panel


DRIVABLE_CLASSES = ("not drivable", "drivable")
DRIVABLE_PALETTE = ((70, 70, 70), (0, 200, 60))


def label_space(segmenter: Segmenter, dataset: SegmentationDataset) -> str:
    """``classes`` when the model's classes are the dataset's; ``drivable`` when only the
    drivable mask can be scored (the dataset has other classes but names its drivable ones)."""
    if tuple(segmenter.class_names) == tuple(dataset.info.class_names):
        return "classes"
    if dataset.info.drivable_classes:
        return "drivable"
    raise SSNetError(f"the model's classes ({', '.join(segmenter.class_names)}) are not "
                     f"those of {dataset.info.name} ({', '.join(dataset.info.class_names)})")


def report_classes(summary: dict[str, Any], segmenter: Segmenter
                   ) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """Class names and palette of a summary's confusion matrix."""
    if summary.get("label_space") == "drivable":
        return DRIVABLE_CLASSES, DRIVABLE_PALETTE
    return segmenter.class_names, segmenter.palette


Kept = tuple[str, np.ndarray, np.ndarray, np.ndarray, str]
"""A panel to draw: (image name, image, prediction, truth, caption)."""


def drivable_truth_lut(dataset: SegmentationDataset) -> np.ndarray:
    """256 entries: a dataset label -> 1 drivable, 0 not, IGNORE_INDEX left out of scoring."""
    truth_lut = np.full(256, IGNORE_INDEX, np.uint8)
    truth_lut[:len(dataset.info.class_names)] = 0
    for name in dataset.info.drivable_classes:
        truth_lut[dataset.info.class_names.index(name)] = 1
    for name in dataset.info.drivable_ignore:
        truth_lut[dataset.info.class_names.index(name)] = IGNORE_INDEX
    return truth_lut


def choose_panels(scores: Sequence[float], keep: int) -> list[int]:
    """Indices of the images to draw: the worst half of ``keep`` by score, then the rest
    spread evenly over the remaining images ranked by score (best included), worst first."""
    if keep <= 0 or not scores:
        return []
    order = [int(i) for i in np.argsort(np.asarray(scores), kind="stable")]
    if keep >= len(order):
        return order
    worst = order[:(keep + 1) // 2]
    rest = order[len(worst):]
    spread = [rest[round(j * (len(rest) - 1) / max(1, keep - len(worst) - 1))]
              for j in range(keep - len(worst))]
    return list(dict.fromkeys(worst + spread))


def evaluate(segmenter: Segmenter, dataset: SegmentationDataset, *, limit: int | None = None,
             batch_size: int = 1, keep: int = 0, progress: bool = True
             ) -> tuple[dict[str, Any], np.ndarray, list[Kept]]:
    """Confusion matrix and summary over ``dataset``; also ``keep`` panels to draw.

    When the dataset's classes are not the model's (e.g. IDD-Lite or KITTI road for a CamVid
    model), only the drivable mask is scored: a 2x2 matrix of not drivable / drivable, with
    ``summary["label_space"] == "drivable"`` and no mIoU.
    The panels are the worst images by drivable IoU and a spread over the others
    (:func:`choose_panels`), segmented again after the pass so no image is held meanwhile.
    Returns (summary, matrix, kept).
    """
    space = label_space(segmenter, dataset)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    k = segmenter.card.num_classes if space == "classes" else 2
    truth_lut = drivable_truth_lut(dataset) if space == "drivable" else None
    drivable_ids = segmenter.drivable_ids if space == "classes" else (1,)
    matrix = np.zeros((k, k), np.int64)
    per_image: list[dict[str, Any]] = []
    times: list[float] = []

    trust: list[float | None] = []

    def predict(items: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray,
                                                                         np.ndarray]]:
        results = segmenter.segment_batch([image for image, _ in items], confidence=False)
        trust[:] = [r.drivable_trust for r in results]
        if space == "drivable":
            return [(r.drivable.astype(np.uint8), truth_lut[truth])
                    for r, (_, truth) in zip(results, items)]
        return [(r.labels, truth) for r, (_, truth) in zip(results, items)]

    bar = tqdm(total=n, desc=f"eval {dataset.info.name}/{dataset.split}", unit="img",
               disable=not progress, file=sys.stderr)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        t0 = time.perf_counter()
        predicted = predict(items)
        times.append((time.perf_counter() - t0) / len(items))
        for offset, (pred, truth) in enumerate(predicted):
            matrix += confusion_matrix(pred, truth, k)
            accuracy, iou = image_scores(pred, truth, drivable_ids)
            per_image.append({"image": dataset.name(start + offset), "pixel_accuracy": accuracy,
                              "drivable_iou": iou})
            if trust[offset] is not None:
                per_image[-1]["drivable_trust"] = trust[offset]
        bar.update(len(items))
    bar.close()
    if space == "classes":
        summary = summarize(matrix, segmenter.class_names, segmenter.drivable_ids)
    else:
        summary = summarize(matrix, DRIVABLE_CLASSES, (1,))
        summary.update(miou=None, mean_class_accuracy=None)
    summary.update(images=n, dataset=dataset.info.name, split=dataset.split, label_space=space,
                   seconds_per_image_median=float(np.median(times)) if times else None)
    with_trust = [p for p in per_image if "drivable_trust" in p]
    summary["drivable_trust"] = None if not with_trust else trust_scores(
        [p["drivable_trust"] for p in with_trust], [p["drivable_iou"] for p in with_trust])
    summary["per_image"] = per_image
    kept: list[Kept] = []
    ranked = sorted(range(n), key=lambda i: per_image[i]["drivable_iou"])
    for i in choose_panels([p["drivable_iou"] for p in per_image], keep):
        image, truth = dataset[i]
        pred, truth = predict([(image, truth)])[0]
        rank = ranked.index(i) + 1
        score = per_image[i]
        caption = (f"{score['image']}: drivable IoU {100 * score['drivable_iou']:.1f}%, pixel "
                   f"accuracy {100 * score['pixel_accuracy']:.1f}% (rank {rank} of {n}, "
                   f"1 = worst)")
        kept.append((score["image"], image, pred, truth, caption))
    return summary, matrix, kept


def write_report(out: Path, summary: dict[str, Any], matrix: np.ndarray,
                 kept: list[Kept],
                 class_names: Sequence[str], palette: Sequence[Sequence[int]],
                 title: str) -> None:
    """metrics.json, metrics.md, confusion.png and overlays/NN_NAME.png (worst first, then a
    spread) under ``out``."""
    write_json(out / "metrics.json", {**summary, "confusion_matrix": matrix.tolist()})
    scored = [p for p in summary.get("per_image", []) if "drivable_trust" in p]
    if scored:
        save_trust_scatter(out / "trust_scatter.png", [p["drivable_trust"] for p in scored],
                           [p["drivable_iou"] for p in scored], title)
    write_text(out / "metrics.md", markdown_report(summary, title))
    save_confusion_png(out / "confusion.png", matrix, class_names, title)
    for i, (name, image, prediction, truth, caption) in enumerate(kept):
        write_png(out / "overlays" / f"{i:02d}_{name}.png",
                  panel(image, prediction, truth, palette, class_names, caption))


def check_report_folder(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite`` and it holds an ssnet-eval report."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise SSNetError(f"output {out} exists; pass --overwrite to replace it")
    if not out.is_dir() or out.is_symlink() or (
            any(out.iterdir()) and not (out / "metrics.json").is_file()):
        raise SSNetError(f"output {out} exists and is not an ssnet-eval report folder; not "
                         f"replacing it even with --overwrite")


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-eval."""
    p = cli.parser("ssnet-eval", __doc__)
    cli.add(p, "--weights")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset reader")
    p.add_argument("--root", required=True, type=Path, help="dataset root folder")
    p.add_argument("--split", default="val", help="split to evaluate")
    p.add_argument("--out", required=True, type=Path, help="folder for the report")
    cli.add(p, "--device", "--precision", "--input-height", "--input-width")
    p.add_argument("--flip", action="store_true",
                   help="average the logits with those of the mirrored image (2x the work)")
    cli.add(p, "--drivable-floor", "--drivable-connected")
    cli.add(p, "--batch-size", "--limit")
    p.add_argument("--overlays", type=int, default=6,
                   help="overlay panels to write (a spread over the images, worst first)")
    cli.add(p, "--overwrite", "--no-progress")
    return p


@cli.entry_point("ssnet-eval", interrupted="no report written")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-eval."""
    args = build_parser().parse_args(argv)
    size = cli.input_size(args)
    rule = cli.drivable_rule(args)
    check_report_folder(args.out, args.overwrite)
    segmenter = Segmenter(args.weights, device=args.device, precision=args.precision,
                          input_size=size, flip=args.flip, drivable_rule=rule)
    dataset = open_dataset(args.dataset, args.root, args.split)
    print(f"weights {segmenter.weights}: trained on data licensed as: "
          f"{segmenter.card.licence() or 'not recorded'}")
    seen = segmenter.card.trained_on(args.dataset, args.split)
    if seen:
        print(f"ssnet-eval: warning: {seen}", file=sys.stderr)
    summary, matrix, kept = evaluate(segmenter, dataset, limit=args.limit or None,
                                     batch_size=args.batch_size, keep=args.overlays,
                                     progress=not args.no_progress)
    summary["weights"] = str(segmenter.weights)
    summary["model"] = segmenter.card.model
    summary["input_size"] = list(size) if size else (
        "automatic" if segmenter.card.input_rule else "native")
    summary["flip"] = args.flip
    summary["trained_on_split"] = seen  # None: the split was held out from training
    summary["drivable_rule"] = {"floor": rule.floor, "connected": rule.connected}
    title = f"{segmenter.card.model} on {dataset.info.name}/{dataset.split}"
    names, palette = report_classes(summary, segmenter)
    with atomic_path(args.out) as tmp:
        write_report(tmp, summary, matrix, kept, names, palette, title)
        if args.out.exists():  # checked above: an earlier ssnet-eval report, --overwrite
            shutil.rmtree(args.out)
    print(markdown_report(summary, title))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
