"""Training augmentation for road scenes: flip, random scale and crop, photometric jitter."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .datasets.classes import IGNORE_INDEX


@dataclass(frozen=True)
class AugmentConfig:
    """Random scale range, crop (height, width), flip probability and jitter strengths."""

    crop: tuple[int, int] = (192, 256)
    scale: tuple[float, float] = (0.5, 1.1)
    flip: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25


def augment(image: np.ndarray, labels: np.ndarray, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random training view of (RGB uint8 image, uint8 labels) of size ``cfg.crop``."""
    s = rng.uniform(*cfg.scale)
    h, w = labels.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    labels = cv2.resize(labels, (nw, nh), interpolation=cv2.INTER_NEAREST)
    ch, cw = cfg.crop
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
    return jitter(image, cfg, rng), np.ascontiguousarray(labels)


def jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation."""
    img = image.astype(np.float32)
    img *= 1 + rng.uniform(-cfg.brightness, cfg.brightness)
    mean = img.mean()
    img = (img - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * (1 + rng.uniform(-cfg.saturation, cfg.saturation)) + gray
    return np.clip(img, 0, 255).astype(np.uint8)
