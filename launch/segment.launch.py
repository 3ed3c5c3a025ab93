"""Launch the ssnet segmentation node, optionally with RViz2.

    ros2 launch ssnet_ros segment.launch.py image_topic:=/camera/image_raw \
        weights:=/path/to/best.pt rviz:=true

Parameters come from ``params_file`` (default: the installed config/ssnet.yaml); ``weights``
and ``use_sim_time`` override it. Fast DDS gets config/fastdds_large_images.xml unless
FASTRTPS_DEFAULT_PROFILES_FILE is already set (or ``fastdds_profile`` names another file).
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "ssnet_ros"
OUTPUT_TOPICS = ("segmentation/labels", "segmentation/drivable_mask",
                 "segmentation/confidence", "segmentation/color", "segmentation/overlay")
RVIZ_CAMERA_TOPIC = "/camera/image_raw"  # the camera topic config/ssnet.rviz shows


def _nodes(context: LaunchContext) -> list[Node]:
    config = os.path.join(get_package_share_directory(PACKAGE), "config")
    image_topic = LaunchConfiguration("image_topic").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    weights = LaunchConfiguration("weights").perform(context)
    sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    parameters: list = [LaunchConfiguration("params_file").perform(context),
                        {"use_sim_time": sim_time}]
    if weights:
        parameters.append({"weights": weights})
    prefix = f"/{namespace}" if namespace else ""
    segmentation = Node(
        package=PACKAGE, executable="segmentation_node", name="ssnet", namespace=namespace,
        parameters=parameters, remappings=[("image", image_topic)],
        output="screen", emulate_tty=True)
    # config/ssnet.rviz names the default topics; remap them to this launch's topics.
    camera = image_topic if image_topic.startswith("/") else f"{prefix}/{image_topic}"
    rviz_remaps = [(RVIZ_CAMERA_TOPIC, camera)] + [
        (f"/{topic}", f"{prefix}/{topic}") for topic in OUTPUT_TOPICS if prefix]
    rviz = Node(
        package="rviz2", executable="rviz2", name="ssnet_rviz",
        arguments=["-d", os.path.join(config, "ssnet.rviz")],
        parameters=[{"use_sim_time": sim_time}], remappings=rviz_remaps,
        condition=IfCondition(LaunchConfiguration("rviz")), output="screen")
    return [segmentation, rviz]


def generate_launch_description() -> LaunchDescription:
    """Arguments: image_topic, params_file, weights, namespace, use_sim_time, rviz,
    fastdds_profile."""
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
            "rviz", default_value="false", choices=["true", "false"],
            description="Start RViz2 with config/ssnet.rviz."),
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
