"""Launch the ssnet segmentation node, optionally managed (lifecycle) and with RViz2.

    ros2 launch ssnet_ros segment.launch.py image_topic:=/camera/image_raw \
        weights:=ssnet_camvid rviz:=true
    ros2 launch ssnet_ros segment.launch.py managed:=true autostart:=false

``managed:=true`` starts segmentation_lifecycle_node (unconfigured); ``autostart:=true`` (the
default) then configures and activates it from here, as nav2_lifecycle_manager would.
``rviz:=true`` where rviz2 is not installed logs a warning and starts the node without it.

Parameters come from ``params_file`` (default: the installed config/ssnet.yaml); ``weights``
and ``use_sim_time`` override it. Fast DDS gets config/fastdds_large_images.xml unless
FASTRTPS_DEFAULT_PROFILES_FILE is already set (or ``fastdds_profile`` names another file).
"""

from __future__ import annotations

import os

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
    autostart, rviz, fastdds_profile."""
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
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                               LaunchConfiguration("fastdds_profile")),
        OpaqueFunction(function=_nodes),
    ])
