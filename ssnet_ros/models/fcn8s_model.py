"""FCN-8s: VGG-16 encoder, 1x1 score convolutions, transposed convolutions, pool3/pool4 skips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .padding import pad_to_multiple

#: Filters of the 13 VGG-16 convolutions, grouped into the five stages between max-poolings.
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)
)


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights that make a per-channel transposed convolution a bilinear upsampler."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


def upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable transposed convolution upsampling by ``factor``, initialised bilinear."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2,
                            bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


class FCN8s(nn.Module):
    """FCN-8s (Long et al.) over VGG-16, as in the KITTI road segmenter it comes from.

    fc6/fc7 are convolutionalised as a 3x3 and a 1x1 convolution of ``fc_channels`` filters:
    the offline VGG-16 weights hold only the 13 conv layers, so these are trained from scratch
    and kept narrow. Score maps from fc7, pool4 and pool3 (1x1 convolutions) are fused through
    x2, x2 and x8 transposed convolutions. Any input size works (padded to a multiple of 32).
    """

    def __init__(self, num_classes: int, fc_channels: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.size_divisor = 32
        self.encoder = nn.ModuleList()
        in_ch = 3
        for stage in VGG16_STAGES:
            layers: list[nn.Module] = []
            for out_ch in stage:
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
            self.encoder.append(nn.Sequential(*layers))
        self.fc = nn.Sequential(
            nn.Conv2d(512, fc_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        )
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        for score in (self.score_pool4, self.score_pool3):
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
        self.upscore2 = upsampler(num_classes, 2)
        self.upscore_pool4 = upsampler(num_classes, 2)
        self.upscore8 = upsampler(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape (N, num_classes, H, W) for an (N, 3, H, W) input."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.size_divisor)
        pools = []
        for stage in self.encoder:
            x = F.max_pool2d(stage(x), 2, 2)
            pools.append(x)
        score = self.upscore2(self.score_fr(self.fc(pools[4])))
        score = self.upscore_pool4(score + self.score_pool4(pools[3]))
        score = self.upscore8(score + self.score_pool3(pools[2]))
        return score[..., :h, :w]


def encoder_convs(model: FCN8s) -> list[nn.Conv2d]:
    """The 13 VGG-16 convolutions in order (conv1_1..conv5_3)."""
    return [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
