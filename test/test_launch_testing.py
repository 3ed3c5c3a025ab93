"""The package's launch_testing test, in the ROS style: the node under launch, ReadyToTest,
assertions on its outputs while it runs, and on its exit code after shutdown.

Collected by launch_testing's pytest plugin (installed with the ROS 2 launch tooling, see
test_ros2_launch.py); skipped where launch_testing is not installed.
"""

from __future__ import annotations

import os
import sys
import unittest

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="needs launch_testing: `make venv` installs it from "
                             "../shared/ros2_launch_wheels when that folder exists")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402

from ssnet_ros.ros.client import SegmentationClient, image_msg, share_file  # noqa: E402

DOMAIN = 91
ENV = {"ROS_DOMAIN_ID": str(DOMAIN), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
       "OMP_NUM_THREADS": "1",
       "FASTRTPS_DEFAULT_PROFILES_FILE": str(share_file("config/fastdds_large_images.xml"))}


@pytest.mark.launch_test
@pytest.mark.ros
def generate_test_description() -> tuple[launch.LaunchDescription, dict]:
    node = launch.actions.ExecuteProcess(
        cmd=[sys.executable, "-m", "ssnet_ros.node", "--ros-args",
             "-p", "weights:=ssnet_camvid", "-p", "input_height:=48", "-p", "input_width:=64",
             "-r", "__ns:=/lt", "-r", "image:=/lt_camera/image_raw"],
        additional_env=ENV, output="screen", name="ssnet")
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"node": node}


class TestOutputs(unittest.TestCase):
    """While the node runs."""

    def test_labels_and_mask_carry_the_input_header(self, proc_output: object) -> None:
        os.environ.update(ENV)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=DOMAIN)
        client = SegmentationClient(context, outputs=("labels", "drivable_mask"),
                                    namespace="/lt", image_topic="/lt_camera/image_raw",
                                    name="launch_testing_client")
        try:
            self.assertTrue(client.wait_for_node(120.0), "the node never answered")
            rgb = np.random.default_rng(1).integers(0, 256, (96, 128, 3), np.uint8)
            msg = image_msg(rgb, 1_700_000_123 * 10**9, "lt_camera")
            got = None
            for _ in range(5):  # best-effort input: a frame can be lost
                client.send(msg)
                got = client.wait_outputs(msg.header, timeout=20.0)
                if got is not None:
                    break
            self.assertIsNotNone(got)
            for key in ("labels", "drivable_mask"):
                self.assertEqual(got[key].header, msg.header)
                self.assertEqual((got[key].height, got[key].width), (96, 128))
        finally:
            client.close()
            rclpy.try_shutdown(context=context)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """After launch stopped the node with SIGINT."""

    def test_the_node_exits_cleanly(self, proc_info: object, proc_output: object,
                                    node: object) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, process=node)
        launch_testing.asserts.assertInStderr(proc_output, "segmenting /lt_camera/image_raw",
                                              process=node)
