"""Entry point of the segmentation node: ``python -m ssnet_ros.node`` and
``ros2 run ssnet_ros segmentation_node``. The node itself is :mod:`ssnet_ros.ros.node`.

Signals are taken before the slow imports (:mod:`ssnet_ros.startup`)."""

from __future__ import annotations

import sys
from typing import Any

from .startup import run_node

__all__ = ["SegmentationNode", "main"]


def main(argv: list[str] | None = None) -> int:
    """``ros2 run ssnet_ros segmentation_node``: 0 on a clean stop, 1 when it cannot start."""
    return run_node(False, argv)


def __getattr__(name: str) -> Any:
    if name == "SegmentationNode":
        from .ros.node import SegmentationNode

        return SegmentationNode
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
