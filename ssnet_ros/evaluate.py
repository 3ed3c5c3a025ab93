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

from .datasets import IGNORE_INDEX, DATASETS, SegmentationDataset, open_dataset
from .errors import SSNetError
from .fileio import atomic_path, write_json, write_png, write_text
from .metrics import confusion_matrix, summarize
from .plots import save_confusion_png
from .segmenter import Segmenter
from .visualize import colorize, overlay


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


def evaluate(segmenter: Segmenter, dataset: SegmentationDataset, *, limit: int | None = None,
             batch_size: int = 1, keep: int = 0, progress: bool = True
             ) -> tuple[dict[str, Any], np.ndarray, list[tuple[str, np.ndarray, np.ndarray,
                                                             np.ndarray]]]:
    """Confusion matrix and summary over ``dataset``; also the first ``keep`` predictions.

    When the dataset's classes are not the model's (e.g. IDD-Lite or KITTI road for a CamVid
    model), only the drivable mask is scored: a 2x2 matrix of not drivable / drivable, with
    ``summary["label_space"] == "drivable"`` and no mIoU.
    Returns (summary, matrix, kept) where kept holds (name, image, prediction, truth).
    """
    space = label_space(segmenter, dataset)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    k = segmenter.card.num_classes if space == "classes" else 2
    truth_lut = np.full(256, IGNORE_INDEX, np.uint8)
    if space == "drivable":
        truth_lut[:len(dataset.info.class_names)] = 0
        for name in dataset.info.drivable_classes:
            truth_lut[dataset.info.class_names.index(name)] = 1
    matrix = np.zeros((k, k), np.int64)
    kept: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    times: list[float] = []
    bar = tqdm(total=n, desc=f"eval {dataset.info.name}/{dataset.split}", unit="img",
               disable=not progress, file=sys.stderr)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        t0 = time.perf_counter()
        results = segmenter.segment_batch([image for image, _ in items], confidence=False)
        times.append((time.perf_counter() - t0) / len(items))
        for offset, ((image, truth), result) in enumerate(zip(items, results)):
            pred = result.labels
            if space == "drivable":
                pred, truth = result.drivable.astype(np.uint8), truth_lut[truth]
            matrix += confusion_matrix(pred, truth, k)
            if len(kept) < keep:
                kept.append((dataset.name(start + offset), image, pred, truth))
        bar.update(len(items))
    bar.close()
    if space == "classes":
        summary = summarize(matrix, segmenter.class_names, segmenter.drivable_ids)
    else:
        summary = summarize(matrix, DRIVABLE_CLASSES, (1,))
        summary.update(miou=None, mean_class_accuracy=None)
    summary.update(images=n, dataset=dataset.info.name, split=dataset.split, label_space=space,
                   seconds_per_image_median=float(np.median(times)) if times else None)
    return summary, matrix, kept


def panel(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray,
          palette: Sequence[Sequence[int]]) -> np.ndarray:
    """input | prediction overlay | ground truth (void in black), side by side."""
    pred = overlay(image, colorize(prediction, palette), 0.5)
    gt = colorize(np.where(truth == IGNORE_INDEX, 0, truth).astype(np.uint8), palette)
    gt[truth == IGNORE_INDEX] = 0
    return np.concatenate([image, pred, gt], axis=1)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def markdown_report(summary: dict[str, Any], title: str) -> str:
    """The summary as Markdown tables."""
    d = summary["drivable"]
    lines = [f"# {title}", "",
             f"{summary['images']} images of {summary['dataset']}/{summary['split']}, "
             f"{summary['pixels']} labelled pixels (void ignored).", "",
             "| metric | % |", "|---|---:|",
             f"| mIoU | {_pct(summary['miou'])} |",
             f"| pixel accuracy | {_pct(summary['pixel_accuracy'])} |",
             f"| mean class accuracy | {_pct(summary['mean_class_accuracy'])} |",
             f"| drivable IoU | {_pct(d['iou'])} |",
             f"| drivable precision | {_pct(d['precision'])} |",
             f"| drivable recall | {_pct(d['recall'])} |",
             f"| drivable F1 | {_pct(d['f1'])} |", "",
             "| class | IoU % | accuracy % |", "|---|---:|---:|"]
    for name, iou in summary["per_class_iou"].items():
        lines.append(f"| {name} | {_pct(iou)} | {_pct(summary['per_class_accuracy'][name])} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, summary: dict[str, Any], matrix: np.ndarray,
                 kept: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                 class_names: Sequence[str], palette: Sequence[Sequence[int]],
                 title: str) -> None:
    """metrics.json, metrics.md, confusion.png and overlays/*.png under ``out``."""
    write_json(out / "metrics.json", {**summary, "confusion_matrix": matrix.tolist()})
    write_text(out / "metrics.md", markdown_report(summary, title))
    save_confusion_png(out / "confusion.png", matrix, class_names, title)
    for name, image, prediction, truth in kept:
        write_png(out / "overlays" / f"{name}.png", panel(image, prediction, truth, palette))


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
    p = argparse.ArgumentParser(prog="ssnet-eval", description=__doc__)
    p.add_argument("--weights", default=None,
                   help="checkpoint file or shipped name, e.g. fcn8s_camvid (default: "
                        "ssnet_camvid)")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--root", required=True, type=Path, help="dataset root folder")
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, type=Path, help="folder for the report")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--input-height", type=int, default=0,
                   help="network input height (0: automatic, by the model card's rule)")
    p.add_argument("--input-width", type=int, default=0,
                   help="network input width (0: automatic)")
    p.add_argument("--flip", action="store_true",
                   help="average the logits with those of the mirrored image (2x the work)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--overlays", type=int, default=6, help="overlay PNGs to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing report folder (only one ssnet-eval wrote)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-eval."""
    args = build_parser().parse_args(argv)
    if (args.input_height > 0) != (args.input_width > 0):
        print("ssnet-eval: give both --input-height and --input-width, or neither",
              file=sys.stderr)
        return 2
    size = (args.input_height, args.input_width) if args.input_height > 0 else None
    try:
        check_report_folder(args.out, args.overwrite)
        segmenter = Segmenter(args.weights, device=args.device, precision=args.precision,
                              input_size=size, flip=args.flip)
        dataset = open_dataset(args.dataset, args.root, args.split)
        summary, matrix, kept = evaluate(segmenter, dataset, limit=args.limit,
                                         batch_size=args.batch_size, keep=args.overlays,
                                         progress=not args.no_progress)
    except SSNetError as exc:
        print(f"ssnet-eval: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssnet-eval: interrupted; no report written", file=sys.stderr)
        return 130
    summary["weights"] = str(segmenter.weights)
    summary["model"] = segmenter.card.model
    summary["input_size"] = list(size) if size else (
        "automatic" if segmenter.card.input_rule else "native")
    summary["flip"] = args.flip
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
