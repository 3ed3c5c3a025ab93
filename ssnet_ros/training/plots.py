"""Pictures people would rather see than read: confusion matrices and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fileio import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_confusion_png(path: str | Path, matrix: np.ndarray, class_names: Sequence[str],
                       title: str = "") -> None:
    """Row-normalised confusion matrix (truth rows, prediction columns) with percentages."""
    plt = _pyplot()
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.005:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (% of each true class)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def save_curves_png(path: str | Path, history: Sequence[dict[str, Any]]) -> None:
    """Training loss per epoch and every validation figure (``val_*``) where measured."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["train_loss"] for h in history], marker=".")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3)
    keys = sorted({k for h in history for k, v in h.items()
                   if k.startswith("val_") and isinstance(v, (int, float))
                   and k != "val_pixel_accuracy"})
    for key, marker in zip(keys, "osD^v<>ph*"):
        val = [h for h in history if h.get(key) is not None]
        ax2.plot([h["epoch"] for h in val], [100 * h[key] for h in val], marker=marker,
                 label=key.removeprefix("val_").replace("_", " "))
    if keys:
        ax2.legend(fontsize=8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("%")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_runs_png(path: str | Path, runs: dict[str, Sequence[dict[str, Any]]]) -> None:
    """Several training runs on shared axes: training loss and val mIoU against the epoch."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, history in runs.items():
        line, = ax1.plot([h["epoch"] for h in history], [h["train_loss"] for h in history],
                         marker=".", label=label)
        val = [h for h in history if h.get("val_miou") is not None]
        ax2.plot([h["epoch"] for h in val], [100 * h["val_miou"] for h in val], marker="o",
                 color=line.get_color(), label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("val mIoU %")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
