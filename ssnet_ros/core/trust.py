"""Drivable trust: the predicted IoU of a frame's drivable mask, from the softmax alone.

MetaSeg-style (Rottmann et al., 2018/2020): a handful of per-frame features aggregated from the
softmax over the predicted drivable mask, its boundary band and the lower image half
(confidence, margin, entropy, the share of uncertain pixels, the model's own soft drivable IoU,
the drivable share and how ragged the mask is), and a small linear model on them with a logit
link, fitted offline (numpy) and stored in the model card (``ModelCard.trust``).

:func:`trust_features` runs in torch on the logits the network already produced, at the
network's resolution, on whatever device they are on, without host synchronisation (so the
CUDA render path captures it in its graph). :class:`TrustModel` turns features into the trust
figure. :func:`spearman`, :func:`auroc` and :func:`r_squared` score it against true IoUs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SSNetError

#: Feature names in the order :func:`trust_features` computes them.
FEATURES = (
    "drivable_share",       # predicted drivable share of the frame
    "drivable_share_lower",  # ... of the lower image half
    "soft_iou",             # IoU of the predicted mask with the drivable probability
    "drivable_maxp",        # mean max. softmax probability inside the drivable mask
    "drivable_margin",      # mean |2 p(drivable) - 1| inside the drivable mask
    "drivable_entropy",     # mean normalised entropy inside the drivable mask
    "drivable_unsure",      # share of the drivable mask with p(drivable) < 0.9
    "boundary_maxp",        # mean max. probability on the mask's boundary band
    "boundary_entropy",     # mean normalised entropy on the boundary band
    "raggedness",           # boundary band pixels / sqrt(mask pixels)
    "lower_maxp",           # mean max. probability in the lower image half
    "lower_unsure",         # share of lower-half pixels with max. probability < 0.5
    "lower_entropy",        # mean normalised entropy in the lower image half
    "frame_maxp",           # mean max. probability over the frame
    "ambiguous_ratio",      # pixels with 0.1 < p(drivable) < 0.9 over the mask's pixels
    "missed_drivable",      # mean p(drivable) outside the mask in the lower half
)
#: The words the diagnostics use for a feature that pulls the trust down.
REASONS = {
    "drivable_share": "little drivable area", "drivable_share_lower":
    "little drivable area in the lower image half", "soft_iou":
    "the drivable probability disagrees with the mask", "drivable_maxp":
    "low confidence inside the drivable mask", "drivable_margin":
    "drivable vs not drivable undecided inside the mask", "drivable_entropy":
    "high entropy inside the drivable mask", "drivable_unsure":
    "much of the drivable mask is unsure", "boundary_maxp":
    "low confidence on the mask's boundary", "boundary_entropy":
    "high entropy on the mask's boundary", "raggedness": "a ragged, fragmented mask",
    "lower_maxp": "low confidence in the lower image half", "lower_unsure":
    "many unsure pixels in the lower image half", "lower_entropy":
    "high entropy in the lower image half", "frame_maxp": "low confidence over the frame",
    "ambiguous_ratio": "a wide band of ambiguous drivable probability", "missed_drivable":
    "drivable probability outside the mask"}
TRUST_VERSION = 1
#: Targets are clipped to this range before the logit link (an IoU of exactly 0 or 1 has no
#: finite logit).
IOU_CLIP = (0.02, 0.98)


FEATURE_PIXELS = 32768
"""Logits larger than this many pixels are subsampled (every 2nd, 3rd, ... row and column)
before the features are taken: means over a frame barely change, the cost falls 4x or more."""


def trust_features(logits: torch.Tensor, drivable_lut: torch.Tensor) -> torch.Tensor:
    """(N, len(FEATURES)) float32 features from NxCxhxw logits; ``drivable_lut`` maps a class
    id to True where it is drivable (a bool tensor of 256 entries on the logits' device)."""
    step = max(1, int(math.sqrt(logits.shape[-2] * logits.shape[-1] / FEATURE_PIXELS)))
    log_p = torch.log_softmax(logits[..., ::step, ::step].float(), dim=1)
    p = log_p.exp()
    n, c, h, w = p.shape
    maxp = p.amax(dim=1)
    entropy = -(p * log_p).sum(dim=1) / max(math.log(c), 1e-6)
    drivable = drivable_lut[p.argmax(dim=1)]
    q = (p * drivable_lut[:c].to(p.dtype).view(1, c, 1, 1)).sum(dim=1)  # p(drivable)
    d = drivable.float()
    band = F.max_pool2d(d[:, None], 3, 1, 1) + F.max_pool2d(-d[:, None], 3, 1, 1)
    boundary = (band[:, 0] > 0).float()
    lower = torch.zeros((1, h, w), device=p.device)
    lower[:, h // 2:] = 1.0

    def mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (x * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1.0)

    area = d.sum(dim=(1, 2))
    inter = (d * q).sum(dim=(1, 2))
    soft_iou = inter / (area + q.sum(dim=(1, 2)) - inter).clamp_min(1e-6)
    not_lower = (1.0 - d) * lower
    feats = [
        d.mean(dim=(1, 2)), mean(d, lower.expand_as(d)), soft_iou,
        mean(maxp, d), mean((2.0 * q - 1.0).abs(), d), mean(entropy, d),
        mean((q < 0.9).float(), d), mean(maxp, boundary), mean(entropy, boundary),
        boundary.sum(dim=(1, 2)) / area.clamp_min(1.0).sqrt(),
        mean(maxp, lower.expand_as(d)), mean((maxp < 0.5).float(), lower.expand_as(d)),
        mean(entropy, lower.expand_as(d)), maxp.mean(dim=(1, 2)),
        ((q > 0.1) & (q < 0.9)).float().sum(dim=(1, 2)) / (area + 1.0),
        mean(q, not_lower),
    ]
    return torch.stack(feats, dim=1)


def _logit(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, *IOU_CLIP)
    return np.log(x / (1.0 - x))


@dataclass(frozen=True)
class TrustModel:
    """A linear model with a logit link on standardised features: trust =
    sigmoid(bias + sum(weights * (features - mean) / std)), the predicted drivable IoU."""

    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: float
    residual_std: float = 0.0
    """Standard deviation of (trust - true IoU) on the fitting frames (the message variance)."""
    info: Mapping[str, Any] | None = None
    """What it was fitted on and its held-out figures (kept in the card as they are)."""

    def __post_init__(self) -> None:
        k = len(self.features)
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise SSNetError(f"trust model uses unknown features {unknown}")
        for name in ("mean", "std", "weights"):
            value = getattr(self, name)
            if value.shape != (k,) or not np.isfinite(value).all():
                raise SSNetError(f"trust model {name} must be {k} finite numbers")
        if (self.std <= 0).any() or not math.isfinite(self.bias):
            raise SSNetError("trust model std must be positive and its bias finite")

    @property
    def columns(self) -> np.ndarray:
        """Indices of the model's features among :data:`FEATURES`."""
        return np.array([FEATURES.index(f) for f in self.features], np.int64)

    def linear(self, features: np.ndarray) -> np.ndarray:
        """(N,) logits of the trust for (N, len(FEATURES)) features."""
        z = (np.asarray(features, np.float64)[:, self.columns] - self.mean) / self.std
        return self.bias + z @ self.weights

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) trust in 0..1 for (N, len(FEATURES)) features (NaN features give 0)."""
        x = np.nan_to_num(np.asarray(features, np.float64), nan=0.0)
        return 1.0 / (1.0 + np.exp(-np.clip(self.linear(x), -30.0, 30.0)))

    def reason(self, features: np.ndarray) -> str:
        """In words, the feature of one frame that pulls its trust down the most."""
        z = (np.asarray(features, np.float64)[self.columns] - self.mean) / self.std
        contribution = z * self.weights
        worst = int(np.argmin(contribution))
        return REASONS[self.features[worst]]

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for the model card."""
        return {"version": TRUST_VERSION, "link": "logit", "features": list(self.features),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "weights": [float(v) for v in self.weights], "bias": float(self.bias),
                "residual_std": float(self.residual_std), "info": dict(self.info or {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrustModel:
        """Inverse of :meth:`to_dict`; SSNetError on a malformed entry."""
        try:
            if int(data.get("version", 0)) != TRUST_VERSION or data.get("link") != "logit":
                raise SSNetError(f"trust model version {data.get('version')} / link "
                                 f"{data.get('link')!r} is not {TRUST_VERSION} / 'logit'")
            return cls(tuple(str(f) for f in data["features"]),
                       np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64),
                       np.asarray(data["weights"], np.float64), float(data["bias"]),
                       float(data.get("residual_std", 0.0)), dict(data.get("info", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise SSNetError(f"trust model is malformed ({exc!r})") from None


def trust_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with a card's trust entry (empty when usable; {} means none)."""
    if not data:
        return []
    try:
        TrustModel.from_dict(data)
    except SSNetError as exc:
        return [str(exc)]
    return []


def fit_trust(features: np.ndarray, iou: np.ndarray, *, names: Sequence[str] = FEATURES,
              ridge: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
              info: Mapping[str, Any] | None = None) -> TrustModel:
    """Ridge regression of logit(IoU) on standardised features; the ridge strength is picked
    by exact leave-one-out error of the predicted IoU. ``features`` is (N, len(FEATURES))."""
    x_all = np.asarray(features, np.float64)
    y_iou = np.asarray(iou, np.float64)
    if x_all.ndim != 2 or x_all.shape[1] != len(FEATURES) or len(y_iou) != len(x_all):
        raise SSNetError(f"fit_trust needs (N, {len(FEATURES)}) features and N IoUs")
    if len(y_iou) < 8:
        raise SSNetError(f"fit_trust needs at least 8 frames, got {len(y_iou)}")
    cols = [FEATURES.index(n) for n in names]
    x = np.nan_to_num(x_all[:, cols])
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    z = (x - mean) / std
    y = _logit(y_iou)
    best: tuple[float, np.ndarray, float] | None = None
    design = np.hstack([np.ones((len(z), 1)), z])
    for alpha in ridge:
        penalty = alpha * np.eye(design.shape[1])
        penalty[0, 0] = 0.0
        inverse = np.linalg.inv(design.T @ design + penalty)
        beta = inverse @ design.T @ y
        hat = np.einsum("ij,jk,ik->i", design, inverse, design)
        loo = y - (y - design @ beta) / np.clip(1.0 - hat, 1e-6, None)
        error = float(np.mean((1.0 / (1.0 + np.exp(-loo)) - y_iou) ** 2))
        if best is None or error < best[0]:
            best = (error, beta, alpha)
    assert best is not None
    _, beta, alpha = best
    model = TrustModel(tuple(names), mean, std, beta[1:], float(beta[0]), 0.0,
                       {**dict(info or {}), "ridge": alpha})
    residual = float(np.std(model.predict(x_all) - y_iou))
    return TrustModel(model.features, mean, std, beta[1:], float(beta[0]), residual,
                      model.info)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties averaged); None for fewer than 3 pairs or no spread."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3:
        return None
    ra, rb = _ranks(a) - (len(a) + 1) / 2, _ranks(b) - (len(b) + 1) / 2
    den = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else None


def auroc(score: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` (ties count half); None when one
    class is absent."""
    s, pos = np.asarray(score, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def r_squared(prediction: Sequence[float], truth: Sequence[float]) -> float | None:
    """Coefficient of determination of ``prediction`` for ``truth`` (None: no spread)."""
    p, t = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    total = float(((t - t.mean()) ** 2).sum()) if len(t) else 0.0
    return 1.0 - float(((t - p) ** 2).sum()) / total if total > 0 else None


LOW_IOU = 0.70
"""Frames whose true drivable IoU is below this are the ones the trust must flag."""


def trust_scores(trust: Sequence[float], iou: Sequence[float]) -> dict[str, Any]:
    """Spearman, AUROC for IoU < :data:`LOW_IOU` (low trust flags) and R² of trust vs IoU."""
    t, y = np.asarray(trust, np.float64), np.asarray(iou, np.float64)
    low = y < LOW_IOU
    return {"frames": int(len(t)), "frames_iou_below_70": int(low.sum()),
            "spearman": spearman(t, y), "auroc_iou_below_70": auroc(-t, low),
            "r2": r_squared(t, y),
            "mean_abs_error": float(np.abs(t - y).mean()) if len(t) else None}


def save_trust_scatter(path: Any, trust: Sequence[float], iou: Sequence[float],
                       title: str = "", groups: Sequence[str] | None = None) -> None:
    """Scatter PNG of trust (x) against the true drivable IoU (y), one colour per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    t, y = np.asarray(trust, float), np.asarray(iou, float)
    labels = list(groups) if groups is not None else [""] * len(t)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in dict.fromkeys(labels):
        sel = np.array([g == name for g in labels], bool)
        ax.scatter(t[sel], y[sel], s=12, alpha=0.7, label=name or None)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.axhline(LOW_IOU, color="red", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("drivable trust (predicted IoU)")
    ax.set_ylabel("true drivable IoU")
    scores = trust_scores(t, y)
    fmt = (lambda v: "n/a" if v is None else f"{v:.3f}")
    ax.set_title((title + "\n" if title else "") +
                 f"Spearman {fmt(scores['spearman'])}, AUROC(IoU<70) "
                 f"{fmt(scores['auroc_iou_below_70'])}, n={len(t)}", fontsize=9)
    if any(labels):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
