"""Drawing segmentation results as images (numpy only; used by the node, the demo and eval)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SSNetError
from .metrics import IGNORE_INDEX


def alpha_weight(alpha: float) -> int:
    """Overlay weight in 1/256 steps; SSNetError when ``alpha`` is outside 0..1 (the one check
    of an overlay's alpha: the node, the Segmenter and the tools all come here)."""
    if not 0.0 <= alpha <= 1.0:
        raise SSNetError(f"overlay alpha {alpha} is outside 0..1")
    return int(round(alpha * 256))


def palette_lut(palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """A 256x3 uint8 lookup table: row i is class i's RGB colour (black past the palette)."""
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if len(colours) > 256 or colours.min(initial=0) < 0 or colours.max(initial=0) > 255:
        raise ValueError("a palette holds at most 256 RGB colours with values in 0..255")
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(colours)] = colours
    return lut


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """HxW uint8 class ids -> HxWx3 uint8 RGB image in the class colours.

    ``palette`` is a list of RGB triplets or a 256x3 table from :func:`palette_lut` (faster when
    reused).
    """
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be an HxW uint8 array, got {labels.dtype} {labels.shape}")
    lut = palette if isinstance(palette, np.ndarray) and palette.shape == (256, 3) \
        and palette.dtype == np.uint8 else palette_lut(palette)
    return np.take(lut, labels, axis=0)


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """Blend ``color`` over ``rgb`` (both HxWx3 uint8): ``(1 - alpha) * rgb + alpha * color``.

    Integer arithmetic with 1/256 steps of ``alpha``; alpha 0 returns ``rgb``'s pixels, 1
    returns ``color``'s.
    """
    if rgb.shape != color.shape or rgb.dtype != np.uint8 or color.dtype != np.uint8:
        raise ValueError(f"overlay needs two uint8 images of one shape, got {rgb.dtype} "
                         f"{rgb.shape} and {color.dtype} {color.shape}")
    w = alpha_weight(alpha)
    out = rgb.astype(np.uint16) * (256 - w)
    out += color.astype(np.uint16) * w
    out += 128
    out >>= 8
    return out.astype(np.uint8)


def confidence_to_mono8(confidence: np.ndarray) -> np.ndarray:
    """HxW float probabilities in 0..1 -> HxW uint8 in 0..255 (rounded, clipped)."""
    scaled = np.multiply(confidence, 255.0, dtype=np.float32)
    scaled += 0.5
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def mask_to_mono8(mask: np.ndarray) -> np.ndarray:
    """HxW bool -> HxW uint8, 255 where True and 0 elsewhere."""
    return mask.view(np.uint8) * np.uint8(255) if mask.dtype == np.bool_ \
        else np.where(mask, np.uint8(255), np.uint8(0))


DRIVABLE_TINT = (0, 230, 80)
"""Colour of the drivable mask tinted over an image (demo panels, eval panels, sheets)."""


def tint(rgb: np.ndarray, mask: np.ndarray, color: Sequence[int] = DRIVABLE_TINT,
         alpha: float = 0.55) -> np.ndarray:
    """The image with ``color`` blended in where ``mask`` is set (HxW bool)."""
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` (HxWx3) resized to ``width`` pixels wide, aspect kept."""
    import cv2

    h, w = image.shape[:2]
    if w == width:
        return image
    height = max(1, round(h * width / w))
    mode = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=mode)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` under a white bar holding ``text``."""
    import cv2

    bar = np.full((26, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def legend(names: Sequence[str], colors: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """A white strip ``width`` pixels wide with one colour swatch and name per class, wrapped
    into as many rows as needed."""
    import cv2

    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    entries = []
    for name, color in zip(names, colors):
        text_w = cv2.getTextSize(name, font, scale, 1)[0][0]
        entries.append((name, tuple(int(c) for c in color), 22 + text_w + 14))
    rows: list[list[tuple[str, tuple[int, ...], int]]] = [[]]
    used = 6
    for entry in entries:
        if rows[-1] and used + entry[2] > width:
            rows.append([])
            used = 6
        rows[-1].append(entry)
        used += entry[2]
    strip = np.full((8 + 22 * len(rows), width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        x, y = 6, 6 + 22 * r
        for name, color, span in row:
            cv2.rectangle(strip, (x, y), (x + 16, y + 16), color, -1)
            cv2.rectangle(strip, (x, y), (x + 16, y + 16), (0, 0, 0), 1)
            cv2.putText(strip, name, (x + 22, y + 13), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
            x += span
    return strip


def panel(rgb: np.ndarray, overlay_rgb: np.ndarray, drivable: np.ndarray,
          names: Sequence[str], colors: Sequence[Sequence[int]], title: str = "",
          width: int = 960) -> np.ndarray:
    """What a person reads on a laptop: the class overlay above the drivable mask tinted over
    the image, both ``width`` pixels wide, with a class-colour legend (and a title)."""
    top = fit_width(overlay_rgb, width)
    bottom = fit_width(tint(rgb, drivable.astype(bool)), width)
    parts = [caption(top, f"classes  {title}".rstrip()),
             caption(bottom, "drivable (green)"),
             legend(list(names) + ["drivable"], list(colors) + [DRIVABLE_TINT], width)]
    return np.concatenate(parts, axis=0)


_caption = caption  # truth_panel's argument of that name hides the function


def truth_panel(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray,
                palette: Sequence[Sequence[int]], class_names: Sequence[str] = (),
                caption: str = "", max_width: int = 1440) -> np.ndarray:
    """input | prediction overlay | ground truth (void in black), side by side, under a
    caption and above a class-colour legend (at most ``max_width`` pixels wide)."""
    pred = overlay(image, colorize(prediction, palette), 0.5)
    gt = colorize(np.where(truth == IGNORE_INDEX, 0, truth).astype(np.uint8), palette)
    gt[truth == IGNORE_INDEX] = 0
    row = np.concatenate([image, pred, gt], axis=1)
    if row.shape[1] > max_width:
        row = fit_width(row, max_width)
    parts = [_caption(row, caption or "input | prediction | ground truth (void black)")]
    if class_names:
        parts.append(legend(list(class_names) + ["void"], list(palette)[:len(class_names)]
                            + [(0, 0, 0)], row.shape[1]))
    return np.concatenate(parts, axis=0)
