"""Zero padding to the size an encoder-decoder can pool and restore exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``x`` (N, C, H, W) zero-padded at the bottom and right to multiples of ``divisor``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph > 0 or pw > 0:
        return F.pad(x, (0, pw, 0, ph))
    return x
