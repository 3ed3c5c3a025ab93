"""ssnet_ros: SSNet / FCN-8s semantic segmentation for ROS 2 camera streams.

The inference core (this package's top level: models, checkpoint, preprocessing, Segmenter,
metrics, datasets, training and evaluation) is pure PyTorch and numpy and never imports rclpy;
the node, message conversions, the test/demo client and the live-replay tool are the modules
that touch ROS.
"""

from .core.checkpoint import ModelCard, load_checkpoint, read_card, save_checkpoint
from .errors import SSNetError
from .models import build_model, list_models
from .core.segmenter import SegmentationResult, Segmenter, default_weights

__all__ = [
    "ModelCard", "SSNetError", "SegmentationResult", "Segmenter", "build_model",
    "default_weights", "list_models", "load_checkpoint", "read_card", "save_checkpoint",
]
__version__ = "0.1.0"
