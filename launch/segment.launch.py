"""Launch the ssnet segmentation node, optionally managed (lifecycle) and with RViz2.

    ros2 launch ssnet_ros segment.launch.py image_topic:=/camera/image_raw \
        weights:=ssnet_camvid rviz:=true
    ros2 launch ssnet_ros segment.launch.py managed:=true autostart:=false
    ros2 launch ssnet_ros segment.launch.py image_topic:=/kitti/camera_color_left/image_raw \
        camera_pose:="[0.0, 0.0, 1.65, 0.0, 0.0, 0.0]" grid_frame:=base_link

``managed:=true`` starts segmentation_lifecycle_node (unconfigured); ``autostart:=true`` (the
default) then configures and activates it from here, as nav2_lifecycle_manager would.
``rviz:=true`` where rviz2 is not installed logs a warning and starts the node without it.

Parameters come from ``params_file`` (default: the installed config/ssnet.yaml); ``weights``,
``use_sim_time`` and the drivable-grid arguments (``camera_pose``, ``grid_frame``,
``grid_resolution``, ``grid_x_range``, ``grid_y_range``, ``publish_drivable_grid``,
``trust_unknown_grid``) override it
where given. Numbers in the lists may be written as integers (``[0, 0, 1.65, 0, 0, 0]``): the
launch file makes them floats, as the node's double-array parameters need. Fast DDS gets config/fastdds_large_images.xml unless
FASTRTPS_DEFAULT_PROFILES_FILE is already set (or ``fastdds_profile`` names another file).
"""

from __future__ import annotations

import math
import os
from typing import Any

import yaml
from ament_index_python.packages import get_package_share_directory
from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch import LaunchContext, LaunchDescription
from launch.action import Action
from launch.actions import (DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction,
                            RegisterEventHandler, SetEnvironmentVariable)
from launch.events import matches_action
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "ssnet_ros"
OUTPUT_TOPICS = ("segmentation/labels", "segmentation/drivable_mask",
                 "segmentation/confidence", "segmentation/color", "segmentation/overlay",
                 "segmentation/drivable_grid")
RVIZ_CAMERA_TOPIC = "/camera/image_raw"  # the camera topic config/ssnet.rviz shows


#: Launch arguments that override params_file's drivable-grid parameters (empty: keep it).
GRID_ARGUMENTS = {
    "camera_pose": "[x, y, z, roll, pitch, yaw] (m, rad) of the camera body frame in "
                   "grid_frame, e.g. \"[0.0, 0.0, 1.65, 0.0, 0.0, 0.0]\" for KITTI's camera "
                   "(level, 1.65 m above the road); six numbers per camera with cameras.",
    "grid_frame": "frame_id of segmentation/drivable_grid, whose z = 0 plane is the ground.",
    "grid_resolution": "Metres per cell of segmentation/drivable_grid.",
    "grid_x_range": "[min, max] metres ahead (grid_frame x) the grid covers, e.g. [0.0, 40.0].",
    "grid_y_range": "[min, max] metres to the side (grid_frame y), e.g. [-20.0, 20.0].",
    "publish_drivable_grid": "true or false: publish segmentation/drivable_grid.",
    "trust_unknown_grid": "true or false: write the grid cells of a frame whose drivable "
                          "trust is below trust_threshold as unknown (-1).",
}


def grid_overrides(values: dict[str, str]) -> dict[str, Any]:
    """The node parameters the non-empty grid launch arguments in ``values`` give; ValueError
    with one sentence naming the argument when one cannot be used."""
    out: dict[str, Any] = {}
    for name, text in values.items():
        if name not in GRID_ARGUMENTS or not text.strip():
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = None
        if name in ("camera_pose", "grid_x_range", "grid_y_range"):
            ok = isinstance(value, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value)
            need = "a list of numbers like [0.0, 0.0, 1.65, 0.0, 0.0, 0.0]" \
                if name == "camera_pose" else "[min, max]"
            if ok:
                out[name] = [float(v) for v in value]
        elif name == "grid_resolution":
            ok, need = isinstance(value, (int, float)) and not isinstance(value, bool), \
                "a number of metres"
            if ok:
                out[name] = float(value)
        elif name in ("publish_drivable_grid", "trust_unknown_grid"):
            ok, need = isinstance(value, bool), "true or false"
            if ok:
                out[name] = value
        else:
            ok, need = True, ""
            out[name] = text.strip()
        if not ok:
            raise ValueError(f"launch argument {name}:={text!r} must be {need}")
    return out


def _true(context: LaunchContext, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).lower() in ("true", "1")


def _installed(package: str) -> bool:
    try:
        get_package_prefix(package)
    except (PackageNotFoundError, ValueError, KeyError):
        return False
    return True


def _lifecycle_steps(node: LifecycleNode) -> list[Action]:
    """Configure ``node`` once it runs, then activate it once it is inactive."""
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def change(transition: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition))

    return [RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                entities=[change(Transition.TRANSITION_ACTIVATE)])),
            change(Transition.TRANSITION_CONFIGURE)]


def _nodes(context: LaunchContext) -> list[Action]:
    config = os.path.join(get_package_share_directory(PACKAGE), "config")
    image_topic = LaunchConfiguration("image_topic").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    weights = LaunchConfiguration("weights").perform(context)
    sim_time = _true(context, "use_sim_time")
    managed = _true(context, "managed")
    parameters: list = [LaunchConfiguration("params_file").perform(context),
                        {"use_sim_time": sim_time}]
    if weights:
        parameters.append({"weights": weights})
    grid = grid_overrides({name: LaunchConfiguration(name).perform(context)
                           for name in GRID_ARGUMENTS})
    if grid:
        parameters.append(grid)
    prefix = f"/{namespace}" if namespace else ""
    kind = LifecycleNode if managed else Node
    segmentation = kind(
        package=PACKAGE, name="ssnet", namespace=namespace,
        executable="segmentation_lifecycle_node" if managed else "segmentation_node",
        parameters=parameters, remappings=[("image", image_topic)],
        output="screen", emulate_tty=True)
    actions: list[Action] = [segmentation]
    if managed and _true(context, "autostart"):
        actions += _lifecycle_steps(segmentation)
    if not _true(context, "rviz"):
        return actions
    if not _installed("rviz2"):
        return actions + [LogInfo(msg="[WARNING] rviz:=true but rviz2 is not installed here "
                                      "(apt install ros-jazzy-rviz2); the node runs without it")]
    # config/ssnet.rviz names the default topics; remap them to this launch's topics.
    camera = image_topic if image_topic.startswith("/") else f"{prefix}/{image_topic}"
    rviz_remaps = [(RVIZ_CAMERA_TOPIC, camera)] + [
        (f"/{topic}", f"{prefix}/{topic}") for topic in OUTPUT_TOPICS if prefix]
    rviz = Node(
        package="rviz2", executable="rviz2", name="ssnet_rviz",
        arguments=["-d", os.path.join(config, "ssnet.rviz")],
        parameters=[{"use_sim_time": sim_time}], remappings=rviz_remaps, output="screen")
    return actions + [rviz]


def generate_launch_description() -> LaunchDescription:
    """Arguments: image_topic, params_file, weights, namespace, use_sim_time, managed,
    autostart, rviz, fastdds_profile and the drivable-grid ones (GRID_ARGUMENTS)."""
    config = os.path.join(get_package_share_directory(PACKAGE), "config")
    return LaunchDescription([
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/image_raw",
            description="Camera topic (sensor_msgs/Image); with input_transport compressed "
                        "the node reads <image_topic>/compressed."),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(config, "ssnet.yaml"),
            description="YAML file with the node's parameters."),
        DeclareLaunchArgument(
            "weights", default_value="",
            description="Checkpoint overriding params_file's weights (empty: keep it)."),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="Namespace of the node and its segmentation/* topics."),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", choices=["true", "false"],
            description="Use /clock (e.g. when playing a bag with --clock)."),
        DeclareLaunchArgument(
            "managed", default_value="false", choices=["true", "false"],
            description="Run the lifecycle node segmentation_lifecycle_node (starts "
                        "unconfigured)."),
        DeclareLaunchArgument(
            "autostart", default_value="true", choices=["true", "false"],
            description="With managed:=true, configure and activate the node from this "
                        "launch (false: leave it unconfigured for a lifecycle manager)."),
        DeclareLaunchArgument(
            "rviz", default_value="false", choices=["true", "false"],
            description="Start RViz2 with config/ssnet.rviz (skipped with a warning where "
                        "rviz2 is not installed)."),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                default_value=os.path.join(config, "fastdds_large_images.xml")),
            description="Fast DDS XML profile for the started processes (default: "
                        "$FASTRTPS_DEFAULT_PROFILES_FILE when set, else the installed "
                        "fastdds_large_images.xml with a 128 MB shared-memory segment)."),
        *(DeclareLaunchArgument(name, default_value="",
                                description=f"{text} Empty: params_file's value.")
          for name, text in GRID_ARGUMENTS.items()),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                               LaunchConfiguration("fastdds_profile")),
        OpaqueFunction(function=_nodes),
    ])
