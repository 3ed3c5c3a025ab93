"""The inference core imports without ROS: only node, conversions and client may need rclpy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE = ["ssnet_ros", "ssnet_ros.segmenter", "ssnet_ros.models", "ssnet_ros.checkpoint",
        "ssnet_ros.preprocessing", "ssnet_ros.visualize", "ssnet_ros.stats", "ssnet_ros.mailbox",
        "ssnet_ros.fileio", "ssnet_ros.errors"]
ROS_PACKAGES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs",
                "builtin_interfaces", "rosidl_runtime_py", "rpyutils")


def ros_modules_after_importing(modules: list[str]) -> list[str]:
    code = (f"import importlib, json, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {ROS_PACKAGES!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(150)
def test_core_modules_do_not_import_ros() -> None:
    assert ros_modules_after_importing(CORE) == []


@pytest.mark.timeout(150)
def test_the_check_sees_ros_imports() -> None:
    pytest.importorskip("sensor_msgs")
    assert "sensor_msgs" in ros_modules_after_importing(["ssnet_ros.conversions"])
