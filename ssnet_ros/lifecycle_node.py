"""Entry point of the managed (lifecycle) segmentation node: ``python -m
ssnet_ros.lifecycle_node`` and ``ros2 run ssnet_ros segmentation_lifecycle_node``. The node
itself is :mod:`ssnet_ros.ros.lifecycle`; signals are taken before the slow imports
(:mod:`ssnet_ros.startup`)."""

from __future__ import annotations

import sys

from .startup import run_node


def main(argv: list[str] | None = None) -> int:
    """``ros2 run ssnet_ros segmentation_lifecycle_node``: 0 on a clean stop."""
    return run_node(True, argv)


if __name__ == "__main__":
    sys.exit(main())
