"""Model builders and a registry to list and build them by name (pure PyTorch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import SSNetError
from . import fcn8s_model as _fcn8s
from . import ssnet_model as _ssnet
from .fcn8s_model import FCN8s
from .ssnet_model import SSNet
from .vgg_weights import load_vgg16_into

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to the registry under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return wrap


@register_model("ssnet")
def ssnet(*, num_classes: int, vgg_weights: str | Path | None = None) -> SSNet:
    """SSNet; ``vgg_weights`` initialises its 10 encoder convs from VGG-16 conv1_1..conv4_3."""
    model = SSNet(num_classes)
    if vgg_weights is not None:
        load_vgg16_into(_ssnet.encoder_convs(model), vgg_weights)
    return model


@register_model("fcn8s")
def fcn8s(*, num_classes: int, vgg_weights: str | Path | None = None,
          fc_channels: int = 1024) -> FCN8s:
    """FCN-8s; ``vgg_weights`` initialises its 13 VGG-16 convs (transfer learning)."""
    model = FCN8s(num_classes, fc_channels=fc_channels)
    if vgg_weights is not None:
        load_vgg16_into(_fcn8s.encoder_convs(model), vgg_weights)
    return model


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


def build_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; unknown names raise :class:`SSNetError`."""
    if name not in _REGISTRY:
        raise SSNetError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


__all__ = ["FCN8s", "SSNet", "build_model", "fcn8s", "list_models", "register_model", "ssnet"]
