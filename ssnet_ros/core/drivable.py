"""The drivable decision after the network (no ROS): a confidence floor and the connected pass.

The network's labels give the drivable mask (a pixel is drivable when its class is one of the
drivable classes). Two optional rules then take pixels out of it, and always out of the labels
too, so that the mask is exactly the drivable classes of the published labels:

* the **floor**: a pixel labelled with a drivable class whose softmax probability (the
  confidence output) is below ``floor`` is not drivable;
* the **connected pass**: only the drivable area connected (4-neighbourhood) to the road in
  front of the vehicle is kept, i.e. the connected components of the mask that reach the
  :func:`seed_region` (the image's lowest :data:`SEED_HEIGHT` of the rows, its central
  :data:`SEED_WIDTH` of the columns). A tram-track bed or car park beyond a verge is dropped.

A rejected pixel takes its **fallback** label: the most likely class that is not drivable
(:func:`fallback_labels`), so the labels say what the network thinks it is when it is not road
(e.g. Pavement). The confidence output is unchanged: it stays the network's top-class
probability. The floor is applied first, then the connected pass on what is left.
Measured defaults and curves: docs/drivable.md (``ssnet-drivable-curve``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SSNetError

if TYPE_CHECKING:  # torch is imported by the callers that pass tensors (options need not)
    import torch

DEFAULT_FLOOR = 0.0
"""Default confidence floor (0: off); see docs/drivable.md for the measurement."""
DEFAULT_CONNECTED = False
"""Default of the connected pass; see docs/drivable.md for the measurement."""
SEED_HEIGHT = 0.2
"""The seed region's height as a fraction of the image height (its lowest rows)."""
SEED_WIDTH = 0.5
"""The seed region's width as a fraction of the image width (centred)."""


@dataclass(frozen=True)
class DrivableRule:
    """How the drivable mask is decided from the network's labels and confidence."""

    floor: float = DEFAULT_FLOOR
    """A drivable-labelled pixel whose confidence is below this is not drivable (0..1)."""
    connected: bool = DEFAULT_CONNECTED
    """Keep only the drivable area connected to the :func:`seed_region`."""

    def __post_init__(self) -> None:
        if not (isinstance(self.floor, (int, float)) and math.isfinite(self.floor)
                and 0.0 <= self.floor <= 1.0):
            raise SSNetError(f"drivable floor {self.floor!r} is outside 0..1")

    @property
    def active(self) -> bool:
        """True when the rule can change a label (a floor above 0 or the connected pass)."""
        return self.floor > 0.0 or self.connected


OFF = DrivableRule(0.0, False)
"""The network's labels as they are."""


def fallback_labels(logits: torch.Tensor, drivable: torch.Tensor) -> torch.Tensor:
    """N x C x h x w logits -> N x h x w int64: the most likely class that is not drivable
    (``drivable``: C bools, True for a drivable class; at least one must be False)."""
    return logits.masked_fill(drivable.view(1, -1, 1, 1), float("-inf")).argmax(dim=1)


def apply_floor(labels: Any, confidence: Any, fallback: Any, drivable_lut: Any,
                floor: float | torch.Tensor) -> Any:
    """``labels`` with ``fallback`` where the label is drivable but ``confidence`` < ``floor``.

    Works on numpy arrays (the host) and torch tensors (the device, capturable in a CUDA
    graph; ``floor`` may be a 0-d tensor there). ``drivable_lut``: 256 bools by class id;
    all arguments numpy arrays or all torch tensors."""
    if not isinstance(labels, np.ndarray):  # torch
        reject = drivable_lut[labels.long()] & (confidence < floor)
        return labels.where(~reject, fallback.to(labels.dtype))
    reject = drivable_lut[labels] & (confidence < floor)
    return np.where(reject, fallback.astype(labels.dtype), labels)


def seed_region(height: int, width: int) -> tuple[slice, slice]:
    """(rows, columns) of the road in front of the vehicle in a ``height`` x ``width`` image:
    the lowest :data:`SEED_HEIGHT` of the rows (at least one) and the central
    :data:`SEED_WIDTH` of the columns (at least one)."""
    rows = max(1, round(height * SEED_HEIGHT))
    cols = max(1, round(width * SEED_WIDTH))
    left = (width - cols) // 2
    return slice(height - rows, height), slice(left, left + cols)


def connected_to_seed(mask: np.ndarray) -> np.ndarray:
    """HxW bool: the pixels of the HxW bool ``mask`` in a 4-connected component that has a
    pixel in the :func:`seed_region`."""
    import cv2

    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return mask.copy()
    rows, cols = seed_region(*mask.shape)
    seeds = np.unique(components[rows, cols])
    keep = np.zeros(count, bool)
    keep[seeds[seeds > 0]] = True
    return keep[components]


def keep_connected(labels: np.ndarray, fallback: np.ndarray, drivable_lut: np.ndarray
                   ) -> np.ndarray:
    """(N x) H x W labels with ``fallback`` on the drivable pixels not connected to the seed
    region (each frame on its own). ``drivable_lut``: 256 bools by class id."""
    if labels.ndim == 3:
        return np.stack([keep_connected(lab, fb, drivable_lut)
                         for lab, fb in zip(labels, fallback)]) if len(labels) else labels
    mask = drivable_lut[labels]
    drop = mask & ~connected_to_seed(mask)
    return np.where(drop, fallback.astype(labels.dtype), labels)


def decide(labels: np.ndarray, confidence: np.ndarray | None, fallback: np.ndarray | None,
           drivable_lut: np.ndarray, rule: DrivableRule) -> np.ndarray:
    """The published labels from the network's (N x) H x W labels, top-class confidence and
    fallback labels under ``rule`` (floor first, then the connected pass); the drivable mask
    is ``drivable_lut[result]``. ``confidence``/``fallback`` may be None when unused."""
    if rule.floor > 0.0:
        assert confidence is not None and fallback is not None
        labels = apply_floor(labels, confidence, fallback, drivable_lut, rule.floor)
    if rule.connected:
        assert fallback is not None
        labels = keep_connected(labels, fallback, drivable_lut)
    return labels


def check_classes(drivable_ids: tuple[int, ...], num_classes: int, rule: DrivableRule) -> None:
    """Raise SSNetError when ``rule`` could reject a pixel but every class is drivable (no
    fallback label exists)."""
    if rule.active and len(set(drivable_ids)) >= num_classes:
        raise SSNetError("a drivable floor or the connected pass needs a class that is not "
                         "drivable (every class of the model is drivable)")
