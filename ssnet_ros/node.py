"""Entry point of the segmentation node: ``python -m ssnet_ros.node`` and
``ros2 run ssnet_ros segmentation_node``. The node itself is :mod:`ssnet_ros.ros.node`."""

from __future__ import annotations

import sys

from .ros.node import SegmentationNode, main

__all__ = ["SegmentationNode", "main"]

if __name__ == "__main__":
    sys.exit(main())
