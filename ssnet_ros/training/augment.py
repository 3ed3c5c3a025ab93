"""Training augmentation for road scenes: flip, random scale and crop, photometric jitter.

Scale is sampled in *world* units: 1.0 shows the world as CamVid's 480x360 frames do. A
dataset whose native frames show it at another scale (``DatasetInfo.world_scale``) is
resized by ``scale / world_scale``, so every dataset covers the same range of object sizes.
Beyond colour jitter, illumination changes model what a car camera meets on sunlit roads:
hard cast shadows and sunlit patches, gamma, white balance, blur and sensor noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..datasets.classes import IGNORE_INDEX


@dataclass(frozen=True)
class AugmentConfig:
    """Random scale range (world units, log-uniform), crop (height, width), flip probability
    and the strengths of the photometric changes."""

    crop: tuple[int, int] = (192, 256)
    scale: tuple[float, float] = (0.5, 1.1)
    flip: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    gamma: float = 0.0
    """Gamma drawn log-uniformly in [1/(1+gamma), 1+gamma] (0: off)."""
    white_balance: float = 0.0
    """Per-channel gain drawn in [1-wb, 1+wb] (0: off)."""
    shadow: float = 0.0
    """Probability of casting 1-3 soft-edged shadows (darkened to 35-75 %) on the crop."""
    sunlight: float = 0.0
    """Probability of one sunlit patch (brightened by 20-60 %)."""
    blur: float = 0.0
    """Probability of a Gaussian blur (sigma 0.5-1.5 px)."""
    noise: float = 0.0
    """Probability of Gaussian sensor noise (sigma 2-8 grey levels)."""


#: The recipe of the multi-domain model: objects from half to twice CamVid's size, and strong
#: illumination changes (the KITTI ego-lane holes were sunlit asphalt).
ROBUST = AugmentConfig(scale=(0.5, 2.0), brightness=0.4, contrast=0.35, saturation=0.35,
                       gamma=0.5, white_balance=0.12, shadow=0.5, sunlight=0.3, blur=0.2,
                       noise=0.25)


def augment(image: np.ndarray, labels: np.ndarray, cfg: AugmentConfig,
            rng: np.random.Generator, *, world_scale: float = 1.0,
            crop: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One random training view of (RGB uint8 image, uint8 labels) of size ``crop``.

    ``crop`` defaults to ``cfg.crop``; ``world_scale`` is the dataset's (see module doc)."""
    lo, hi = cfg.scale
    s = math.exp(rng.uniform(math.log(lo), math.log(hi))) / world_scale
    h, w = labels.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    inter = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (nw, nh), interpolation=inter)
    labels = cv2.resize(labels, (nw, nh), interpolation=cv2.INTER_NEAREST)
    ch, cw = crop or cfg.crop
    if nh < ch or nw < cw:
        ph, pw = max(0, ch - nh), max(0, cw - nw)
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        labels = cv2.copyMakeBorder(labels, 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                    value=IGNORE_INDEX)
    y = int(rng.integers(0, labels.shape[0] - ch + 1))
    x = int(rng.integers(0, labels.shape[1] - cw + 1))
    image, labels = image[y:y + ch, x:x + cw], labels[y:y + ch, x:x + cw]
    if rng.random() < cfg.flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return jitter(np.ascontiguousarray(image), cfg, rng), np.ascontiguousarray(labels)


def _soft_polygon(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """HxW float32 mask in 0..1 of a random quadrilateral with blurred edges."""
    h, w = shape
    cx, cy = rng.uniform(0, w), rng.uniform(h * 0.2, h)
    radius = rng.uniform(0.15, 0.6) * max(h, w)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 4 + int(rng.integers(0, 3))))
    pts = np.stack([cx + radius * np.cos(angles) * rng.uniform(0.4, 1.0, len(angles)),
                    cy + radius * np.sin(angles) * rng.uniform(0.2, 0.7, len(angles))], 1)
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [pts.astype(np.int32)], 1.0)
    k = 2 * int(rng.integers(1, 6)) + 1
    return cv2.GaussianBlur(mask, (k, k), 0)


def jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation, and the optional illumination changes."""
    img = image.astype(np.float32)
    if cfg.shadow and rng.random() < cfg.shadow:
        for _ in range(int(rng.integers(1, 4))):
            mask = _soft_polygon(img.shape[:2], rng)
            img *= (1 - mask * (1 - rng.uniform(0.35, 0.75)))[..., None]
    if cfg.sunlight and rng.random() < cfg.sunlight:
        mask = _soft_polygon(img.shape[:2], rng)
        img *= (1 + mask * rng.uniform(0.2, 0.6))[..., None]
    img *= 1 + rng.uniform(-cfg.brightness, cfg.brightness)
    mean = img.mean()
    img = (img - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * (1 + rng.uniform(-cfg.saturation, cfg.saturation)) + gray
    if cfg.white_balance:
        img *= rng.uniform(1 - cfg.white_balance, 1 + cfg.white_balance, 3).astype(np.float32)
    img = np.clip(img, 0, 255)
    if cfg.gamma:
        g = math.exp(rng.uniform(-math.log1p(cfg.gamma), math.log1p(cfg.gamma)))
        img = 255.0 * (img / 255.0) ** g
    if cfg.blur and rng.random() < cfg.blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    if cfg.noise and rng.random() < cfg.noise:
        img = img + rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
