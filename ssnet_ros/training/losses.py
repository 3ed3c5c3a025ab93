"""Training losses: set-valued (partial-label) negative log-likelihood.

A target is a *set* of classes the pixel may take. The loss is the negative log of the summed
probability of the allowed classes, ``-log sum_{c in S} p_c``. With one class per set it is
exactly (weighted) cross-entropy, so one loss trains on fully labelled data (CamVid) and on
coarser label spaces (IDD-Lite's "vehicles" = Car or Bicyclist) with one head and one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..datasets.classes import IGNORE_INDEX


def set_nll(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor,
            weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX
            ) -> torch.Tensor:
    """Weighted mean of ``-log sum_{c in allowed[t]} softmax(logits)_c`` over labelled pixels.

    ``logits`` N x C x H x W; ``targets`` N x H x W int64 row indices into ``allowed``
    (S x C bool) or ``ignore_index``; ``weight`` (S,) per-set weights, as cross-entropy's
    ``weight`` (the mean divides by the summed weights of the labelled pixels).
    """
    valid = targets != ignore_index
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    log_p = F.log_softmax(logits.float(), dim=1)
    mask = torch.zeros(allowed.shape, dtype=log_p.dtype, device=log_p.device)
    mask.masked_fill_(~allowed.to(log_p.device), float("-inf"))
    per_pixel_mask = mask[safe].permute(0, 3, 1, 2)  # N x C x H x W, 0 or -inf
    nll = -torch.logsumexp(log_p + per_pixel_mask, dim=1)
    w = valid.to(nll.dtype)
    if weight is not None:
        w = w * weight.to(nll.device, nll.dtype)[safe]
    return (nll * w).sum() / w.sum().clamp_min(1e-12)
