"""Ignore-aware segmentation metrics from a confusion matrix (rows: truth, columns: prediction),
per-image scores and the Markdown summary (used by ssnet-eval, ssnet-eval-bag and training)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = 255
"""Label of void pixels, which the loss and every metric ignore."""


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Count (truth, prediction) pairs over pixels whose truth is a valid class id."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    t = target.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    valid = (t != ignore_index) & (t < num_classes)
    if np.any(p[valid] >= num_classes):
        raise ValueError(f"prediction has class ids >= {num_classes}")
    idx = t[valid] * num_classes + p[valid]
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def summarize(matrix: np.ndarray, class_names: Sequence[str],
              drivable_ids: Sequence[int]) -> dict[str, Any]:
    """Per-class IoU, mIoU, pixel and mean class accuracy, and drivable-mask figures.

    Classes that occur neither in the truth nor in the prediction have IoU None and are left out
    of the means; classes absent from the truth are left out of the mean class accuracy.
    """
    m = matrix.astype(np.float64)
    tp = np.diag(m)
    gt = m.sum(axis=1)
    pr = m.sum(axis=0)
    union = gt + pr - tp
    ious = [_ratio(tp[i], union[i]) for i in range(len(tp))]
    accs = [_ratio(tp[i], gt[i]) for i in range(len(tp))]
    present_iou = [v for v in ious if v is not None]
    present_acc = [v for v in accs if v is not None]
    d = np.zeros(len(tp), bool)
    d[list(drivable_ids)] = True
    d_tp = m[np.ix_(d, d)].sum()
    d_fp = m[np.ix_(~d, d)].sum()
    d_fn = m[np.ix_(d, ~d)].sum()
    precision, recall = _ratio(d_tp, d_tp + d_fp), _ratio(d_tp, d_tp + d_fn)
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    return {
        "pixels": int(m.sum()),
        "miou": float(np.mean(present_iou)) if present_iou else None,
        "pixel_accuracy": _ratio(tp.sum(), m.sum()),
        "mean_class_accuracy": float(np.mean(present_acc)) if present_acc else None,
        "per_class_iou": dict(zip(class_names, ious)),
        "per_class_accuracy": dict(zip(class_names, accs)),
        "drivable": {"precision": precision, "recall": recall, "f1": f1,
                     "iou": _ratio(d_tp, d_tp + d_fp + d_fn)},
    }


def image_scores(prediction: np.ndarray, truth: np.ndarray, drivable_ids: Sequence[int]
                 ) -> tuple[float, float]:
    """(pixel accuracy, drivable IoU) of one image over its labelled pixels; drivable IoU is
    1.0 when neither the truth nor the prediction has drivable pixels."""
    valid = truth != IGNORE_INDEX
    if not valid.any():
        return 1.0, 1.0
    accuracy = float((prediction[valid] == truth[valid]).mean())
    pred_d = np.isin(prediction[valid], drivable_ids)
    true_d = np.isin(truth[valid], drivable_ids)
    union = int((pred_d | true_d).sum())
    return accuracy, (float((pred_d & true_d).sum()) / union if union else 1.0)


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
             *([f"**Warning:** {summary['trained_on_split']}", ""]
               if summary.get("trained_on_split") else [])]
    trust = summary.get("drivable_trust")
    if trust:
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        lines += [f"Drivable trust against the true drivable IoU of {trust['frames']} images "
                  f"({trust['frames_iou_below_70']} below 70): Spearman "
                  f"{fmt(trust['spearman'])}, AUROC for IoU < 70 "
                  f"{fmt(trust['auroc_iou_below_70'])}, R² {fmt(trust['r2'])} "
                  f"(trust_scatter.png).", ""]
    lines += ["| class | IoU % | accuracy % |", "|---|---:|---:|"]
    for name, iou in summary["per_class_iou"].items():
        lines.append(f"| {name} | {_pct(iou)} | {_pct(summary['per_class_accuracy'][name])} |")
    return "\n".join(lines) + "\n"
