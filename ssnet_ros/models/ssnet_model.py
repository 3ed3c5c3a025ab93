"""SSNet: a 20-layer SegNet-style encoder-decoder with a VGG-16 encoder (conv1_1..conv4_3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .padding import pad_to_multiple

#: Filters of the 10 encoder convolutions, grouped into the four stages between max-poolings.
ENCODER_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512))


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU (the conv has no bias: batch norm provides it)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SSNet(nn.Module):
    """Encoder-decoder semantic segmentation network.

    Encoder: 10 conv-bn-relu layers in four stages (64, 64 | 128, 128 | 256, 256, 256 |
    512, 512, 512), each stage followed by 2x2 max pooling that remembers its indices.
    Decoder: four stages mirroring the encoder; each starts by max-unpooling with the indices of
    its encoder stage and has as many convolutions as that stage, each reading the stage's width
    (512, 512, 512 | 256, 256, 256 | 128, 128 | 64, 64); the last convolution of a stage narrows
    to the next stage's width so the indices line up (as in SegNet). A 1x1 convolution gives one
    score map per class. ``forward`` returns logits; apply softmax for probabilities.
    Any input size works: the input is padded to a multiple of 16 and the output cropped back.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.size_divisor = 16
        widths = [stage[-1] for stage in ENCODER_STAGES]
        self.encoder = nn.ModuleList()
        in_ch = 3
        for stage in ENCODER_STAGES:
            layers = []
            for out_ch in stage:
                layers.append(conv_bn_relu(in_ch, out_ch))
                in_ch = out_ch
            self.encoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(ENCODER_STAGES))):
            width = widths[i]
            out_last = widths[i - 1] if i > 0 else width
            n = len(ENCODER_STAGES[i])
            outs = [width] * (n - 1) + [out_last]
            self.decoder.append(nn.Sequential(*[conv_bn_relu(width, o) for o in outs]))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape (N, num_classes, H, W) for an (N, 3, H, W) input."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.size_divisor)
        indices: list[torch.Tensor] = []
        for stage in self.encoder:
            x, idx = F.max_pool2d(stage(x), 2, 2, return_indices=True)
            indices.insert(0, idx)
        for i, stage in enumerate(self.decoder):
            x = stage(F.max_unpool2d(x, indices[i], 2, 2))
        x = self.classifier(x)
        return x[..., :h, :w]


def encoder_convs(model: SSNet) -> list[nn.Conv2d]:
    """The 10 encoder convolutions in order (VGG-16 conv1_1..conv4_3)."""
    return [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]

