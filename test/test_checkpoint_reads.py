"""A checkpoint is read once per process: the card a node reads for its parameters and the
model the Segmenter builds come from one torch.load (counted by ssnet_ros.core.checkpoint)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from ssnet_ros.core import checkpoint
from ssnet_ros.core.segmenter import Segmenter


def test_card_then_model_read_the_file_once(ssnet_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    shutil.copy(ssnet_checkpoint, path)
    before = checkpoint.payload_reads
    card = checkpoint.read_card(path)
    seg = Segmenter(path, device="cpu", precision="fp32", warmup=False)
    assert checkpoint.read_card(path) is card and seg.card == card
    assert checkpoint.payload_reads == before + 1
    shutil.copy(ssnet_checkpoint, tmp_path / "new.pt")
    os.replace(tmp_path / "new.pt", path)  # replaced on disk: read again
    checkpoint.read_card(path)
    assert checkpoint.payload_reads == before + 2


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_node_start_up_reads_the_checkpoint_once(ros_context: Any, ssnet_checkpoint: Path,
                                                 tmp_path: Path) -> None:
    import rclpy

    from ssnet_ros.ros.node import SegmentationNode

    path = tmp_path / "node.pt"
    shutil.copy(ssnet_checkpoint, path)
    context = rclpy.Context()
    rclpy.init(args=["ssnet", "--ros-args", "-p", f"weights:={path}", "-p", "device:=cpu"],
               context=context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    before = checkpoint.payload_reads
    node = SegmentationNode(context=context)
    try:
        assert node.get_parameter("drivable_classes").value == ["Road"]
        assert checkpoint.payload_reads == before + 1
    finally:
        node.close()
        rclpy.try_shutdown(context=context)
