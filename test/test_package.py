"""Package metadata: package.xml declares every ROS package the code imports, the licence files
are there, and the pip file for a ROS workspace holds no ROS wheels."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ROS 2 Python packages that do not follow the *_msgs / *_interfaces naming.
ROS_PYTHON_PACKAGES = {"rclpy", "launch", "launch_ros", "launch_testing", "launch_testing_ros",
                       "ament_index_python", "tf2_ros", "tf2_py", "rosidl_runtime_py",
                       "ros2cli", "rosbag2_py", "message_filters", "cv_bridge",
                       "image_transport", "rosgraph_msgs", "rclpy_message_converter"}


def is_ros_package(name: str) -> bool:
    """A top-level import that only a ROS installation (rosdep key = the name) provides."""
    return name in ROS_PYTHON_PACKAGES or name.endswith(("_msgs", "_srvs", "_interfaces"))


def ros_imports(*folders: str) -> dict[str, set[str]]:
    """Top-level ROS package imported -> the files importing it, under ``folders``."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module \
                    and not node.level else []
                for name in names:
                    top = name.split(".")[0]
                    if is_ros_package(top):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def declared(*tags: str) -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in tags for e in root.iter(tag) if e.text}


def test_package_xml_declares_every_ros_package_the_code_imports() -> None:
    runtime = declared("depend", "exec_depend")
    missing = {pkg: files for pkg, files in ros_imports("ssnet_ros", "launch").items()
               if pkg not in runtime}
    assert not missing, f"add <exec_depend> to package.xml for {missing}"
    testing = runtime | declared("test_depend")
    missing = {pkg: files for pkg, files in ros_imports("test").items() if pkg not in testing}
    assert not missing, f"add <test_depend> to package.xml for {missing}"
    # the grid's OccupancyGrid carries a geometry_msgs/Pose origin
    assert {"nav_msgs", "geometry_msgs"} <= runtime


def test_the_scan_finds_what_it_should() -> None:
    """The check above could fail: the node's own imports are found."""
    found = ros_imports("ssnet_ros")
    assert {"rclpy", "sensor_msgs", "nav_msgs"} <= set(found)
    assert "ssnet_ros/ros/node.py" in found["nav_msgs"]
    assert not is_ros_package("rosbags") and not is_ros_package("torch")


def test_licence_files_and_metadata_agree() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert declared("license") == {"MIT"}
    assert 'license="MIT"' in (ROOT / "setup.py").read_text()
    assert "CC BY-NC-SA 3.0" in (ROOT / "ssnet_ros" / "samples" / "README.md").read_text()


def test_the_ros_workspace_pip_file_has_no_ros_wheels() -> None:
    """A machine with ROS from apt gets ROS packages from rosdep, never from PyPI."""
    lines = [line.split("#")[0].strip() for line in
             (ROOT / "requirements-ros.txt").read_text().splitlines()]
    names = [re.split(r"[=<>\[ ]", line)[0].lower() for line in lines if line]
    assert names and "torch" in names and "rosbags" in names
    assert not [n for n in names if n.startswith("ros-") or n in {"numpy", "opencv-python",
                                                                  "opencv-python-headless"}]
