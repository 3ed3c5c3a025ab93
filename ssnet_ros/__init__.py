"""ssnet_ros: SSNet / FCN-8s semantic segmentation for ROS 2 camera streams.

The inference core (this package's top level: models, checkpoint, preprocessing, Segmenter,
metrics, datasets, training and evaluation) is pure PyTorch and numpy and never imports rclpy;
the node, message conversions, the test/demo client and the live-replay tool are the modules
that touch ROS.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import SSNetError

#: public names -> the module holding them, imported on first use (torch takes seconds to
#: import; the node's entry points take signals before it, see ssnet_ros.startup)
_LAZY = {"ModelCard": "core.checkpoint", "load_checkpoint": "core.checkpoint",
         "read_card": "core.checkpoint", "save_checkpoint": "core.checkpoint",
         "build_model": "models", "list_models": "models",
         "SegmentationResult": "core.segmenter", "Segmenter": "core.segmenter",
         "default_weights": "core.segmenter"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ModelCard", "SSNetError", "SegmentationResult", "Segmenter", "build_model",
    "default_weights", "list_models", "load_checkpoint", "read_card", "save_checkpoint",
]
__version__ = "0.1.0"
