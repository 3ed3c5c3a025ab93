"""tools/activations.py: the largest activation per layer (docs/gpu.md, fp16 range)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ssnet_ros import Segmenter
from ssnet_ros.tools.activations import FP16_MAX, LOGITS, layer_maxima


def test_every_convolution_is_recorded_at_the_segmenters_size_and_hooks_are_removed() -> None:
    seg = Segmenter(None, device="cpu", precision="fp32", input_size=(48, 64), warmup=False)
    frame = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    maxima, sizes = layer_maxima(seg, [frame, frame[::-1].copy()])
    assert sizes == [(48, 64), (48, 64)]  # the network size, not the frame's
    convs = {n for n, m in seg.model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs and convs <= set(maxima)
    logits = [seg.logits(torch.from_numpy(f.copy())[None])[0] for f in (frame, frame[::-1])]
    assert maxima[LOGITS] == max(float(x.abs().amax()) for x in logits) > 0
    assert all(0 <= v < FP16_MAX * 1e3 for v in maxima.values())
    assert not any(m._forward_hooks for m in seg.model.modules())
