"""Image preprocessing shared by inference, training, evaluation and export."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Return ``image`` if it is an HxWx3 uint8 array, else raise ValueError saying why."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels: {image.shape}")
    return image


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float], *,
              dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """NHWC uint8 (or float 0..255) RGB -> normalised NCHW ``dtype`` on the batch's device."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, 1, 1, 3)
    s = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, 1, 1, 3)
    x = ((batch.float() - m) / s).permute(0, 3, 1, 2).to(dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


def resize_input(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinearly resize an NCHW batch to ``size`` (height, width); None or same size: no-op.

    Frames are resized before normalising instead (:func:`resize_uint8` on the host,
    :func:`resize_frames` on the device), as training's scale augmentation does."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def resize_matrix(n_in: int, n_out: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n_out, n_in) float32 weights of a 1-D resize as OpenCV's :func:`resize_uint8` does it:
    area averaging (the overlap of each output cell with each input pixel, INTER_AREA) when
    shrinking, linear interpolation between pixel centres (INTER_LINEAR) when enlarging.
    Built with torch ops on ``device`` only (no host data), so a CUDA graph can capture it."""
    d = torch.arange(n_out, device=device, dtype=torch.float64)[:, None]
    s = torch.arange(n_in, device=device, dtype=torch.float64)[None, :]
    scale = n_in / n_out
    if n_out <= n_in:
        lo, hi = d * scale, (d + 1) * scale
        overlap = (torch.minimum(hi, s + 1) - torch.maximum(lo, s)).clamp(min=0)
        weights = overlap / overlap.sum(dim=1, keepdim=True)
    else:
        pos = ((d + 0.5) * scale - 0.5).clamp(0, n_in - 1)
        weights = (1 - (s - pos).abs()).clamp(min=0)
    return weights.float()


def resize_frames(batch: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize an NHWC uint8 batch on its own device to ``size`` (height, width) as
    :func:`resize_uint8` does on the host (area when shrinking, bilinear when enlarging; the
    result rounded to whole values): the same labels on the GPU as on the CPU. Returns NHWC
    float32 (uint8 values); None or the same size: the batch as float32."""
    x = batch.float()
    if size is None or tuple(batch.shape[1:3]) == tuple(size):
        return x
    h, w = size
    if batch.shape[1] != h:
        x = torch.einsum("oh,nhwc->nowc", resize_matrix(batch.shape[1], h, x.device), x)
    if batch.shape[2] != w:
        x = torch.einsum("pw,nowc->nopc", resize_matrix(batch.shape[2], w, x.device), x)
    return x.add_(0.5).floor_().clamp_(0, 255)  # halves up, as OpenCV rounds


def resize_uint8(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an NHWC uint8 CPU batch to ``size`` (height, width) with OpenCV before any
    float conversion: area averaging when shrinking (as training's scale augmentation does),
    bilinear when enlarging. Normalising a 12 MP frame first would cost most of the frame."""
    import cv2

    h, w = size
    if tuple(batch.shape[1:3]) == (h, w):
        return batch
    shrink = h * w < batch.shape[1] * batch.shape[2]
    inter = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    frames = [cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=inter)
              for image in batch.numpy()]
    return torch.from_numpy(np.stack(frames))


def resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-resize an (N, H, W) label or confidence tensor to ``size`` (height, width)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    dtype = x.dtype
    y = F.interpolate(x[:, None].float(), size=size, mode="nearest-exact")[:, 0]
    return y.to(dtype)
