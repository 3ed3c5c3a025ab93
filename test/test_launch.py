"""launch/segment.launch.py, config/ssnet.yaml and what setup.py installs.

ROS 2's ``launch`` package is not installable from PyPI, so the launch file is checked as
source (what it starts, which files it uses) and, where ``launch`` exists, also loaded.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "segment.launch.py"
PARAMS_FILE = ROOT / "config" / "ssnet.yaml"
ARGUMENTS = {"image_topic", "params_file", "weights", "namespace", "use_sim_time", "managed",
             "autostart", "rviz", "fastdds_profile"}
CONFIG_FILES = {"ssnet.yaml", "ssnet.rviz", "fastdds_large_images.xml"}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def keyword(call: ast.Call, name: str) -> Any:
    """A call's keyword argument: its value if constant (or a module constant), else the node."""
    for kw in call.keywords:
        if kw.arg == name:
            if isinstance(kw.value, ast.Constant):
                return kw.value.value
            if isinstance(kw.value, ast.Name) and kw.value.id in CONSTANTS:
                return CONSTANTS[kw.value.id]
            return kw.value
    return None


CONSTANTS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    for node in tree.body:  # module-level NAME = "constant"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            CONSTANTS.update({t.id: node.value.value for t in node.targets
                              if isinstance(t, ast.Name)})
    return tree


@pytest.fixture(scope="module")
def data_files() -> dict[str, list[str]]:
    """setup.py's data_files (destination -> sources), evaluated in the repository root."""
    code = ("import json, runpy, setuptools\n"
            "setuptools.setup = lambda **kw: print(json.dumps(kw['data_files']))\n"
            "runpy.run_path('setup.py')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return {dest: sources for dest, sources in json.loads(out.strip().splitlines()[-1])}


def test_launch_file_starts_the_node_or_the_lifecycle_node_and_optionally_rviz(
        launch_tree: ast.Module) -> None:
    """What it starts, read from the source (test_ros2_launch runs it for real)."""
    strings = {n.value for n in ast.walk(launch_tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)}
    assert {"segmentation_node", "segmentation_lifecycle_node", "rviz2"} <= strings
    (rviz,) = [c for c in calls(launch_tree, "Node") if keyword(c, "package") == "rviz2"]
    assert keyword(rviz, "executable") == "rviz2"
    assert calls(launch_tree, "_installed"), "rviz2 is looked up before it is started"


def test_launch_arguments_and_defaults(launch_tree: ast.Module) -> None:
    args = {ast.literal_eval(c.args[0]): c for c in calls(launch_tree, "DeclareLaunchArgument")
            if isinstance(c.args[0], ast.Constant)}
    assert set(args) == ARGUMENTS
    assert keyword(args["image_topic"], "default_value") == "/camera/image_raw"
    assert keyword(args["rviz"], "default_value") == "false"
    assert keyword(args["use_sim_time"], "default_value") == "false"
    for call in args.values():
        assert keyword(call, "description"), "every launch argument is documented"


def test_launch_sets_the_fast_dds_profile_unless_already_set(launch_tree: ast.Module) -> None:
    (setter,) = calls(launch_tree, "SetEnvironmentVariable")
    assert ast.literal_eval(setter.args[0]) == "FASTRTPS_DEFAULT_PROFILES_FILE"
    (env,) = calls(launch_tree, "EnvironmentVariable")  # the user's value wins
    assert ast.literal_eval(env.args[0]) == "FASTRTPS_DEFAULT_PROFILES_FILE"


def test_files_the_launch_file_uses_exist_and_are_installed(
        launch_tree: ast.Module, data_files: dict[str, list[str]]) -> None:
    strings = {n.value for n in ast.walk(launch_tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)}
    referenced = {s for s in strings if s.endswith((".yaml", ".rviz", ".xml"))}
    assert referenced == CONFIG_FILES
    assert "config" in strings  # they are looked up in share/ssnet_ros/config
    installed = {Path(src).name for src in data_files["share/ssnet_ros/config"]}
    for name in referenced:
        assert (ROOT / "config" / name).is_file(), name
        assert name in installed, f"setup.py does not install config/{name}"
    assert "launch/segment.launch.py" in data_files["share/ssnet_ros/launch"]
    assert "package.xml" in data_files["share/ssnet_ros"]


def test_fast_dds_profile_has_a_128_mb_segment_and_loopback_udp() -> None:
    import xml.etree.ElementTree as ET

    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(ROOT / "config" / "fastdds_large_images.xml").getroot()
    transports = {t.findtext("f:transport_id", namespaces=ns): t
                  for t in root.iterfind("f:transport_descriptors/f:transport_descriptor", ns)}
    kinds = {t.findtext("f:type", namespaces=ns): t for t in transports.values()}
    assert int(kinds["SHM"].findtext("f:segment_size", namespaces=ns)) == 128 * 1024 * 1024
    assert kinds["UDPv4"].findtext("f:interfaceWhiteList/f:address", namespaces=ns) \
        == "127.0.0.1"
    (participant,) = root.iterfind("f:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [e.text for e in participant.iterfind("f:rtps/f:userTransports/f:transport_id", ns)]
    assert sorted(used) == sorted(transports)
    assert participant.findtext("f:rtps/f:useBuiltinTransports", namespaces=ns) == "false"


def test_console_script_points_at_the_node() -> None:
    setup = ast.parse((ROOT / "setup.py").read_text())
    scripts = [ast.literal_eval(n) for n in ast.walk(setup) if isinstance(n, ast.Constant)
               and isinstance(n.value, str) and n.value.startswith("segmentation_node")]
    assert scripts == ["segmentation_node = ssnet_ros.node:main"]


def yaml_parameters() -> dict[str, Any]:
    data = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(data) == ["/**"]
    return data["/**"]["ros__parameters"]


def test_params_file_holds_every_parameter_with_its_default() -> None:
    pytest.importorskip("rclpy")
    from ssnet_ros.ros.parameters import PARAMETERS

    assert yaml_parameters() == {spec.name: spec.default for spec in PARAMETERS}


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_node_loads_the_params_file_and_declares_exactly_its_parameters(
        ros_context: Any, ssnet_checkpoint: Path) -> None:
    import rclpy
    from rclpy.parameter import Parameter

    from ssnet_ros.ros.node import SegmentationNode
    from ssnet_ros.ros.parameters import DERIVED_PARAMETERS, PARAMETERS

    DYNAMIC = {s.name for s in PARAMETERS if s.dynamic}
    assert DYNAMIC >= {"overlay_alpha", "publish_labels", "drivable_floor", "trust_threshold"}

    context = rclpy.Context()
    rclpy.init(args=["ssnet", "--ros-args", "--params-file", str(PARAMS_FILE),
                     "-p", f"weights:={ssnet_checkpoint}"],
               context=context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    node = SegmentationNode(context=context)
    try:
        declared = set(node.list_parameters([], 0).names) - {"use_sim_time",
                                                           "start_type_description_service"}
        expected = yaml_parameters()
        assert declared == set(expected) | set(DERIVED_PARAMETERS)
        for name, value in expected.items():
            actual = node.get_parameter_or(name, Parameter(name)).value
            if name == "weights":
                assert actual == str(ssnet_checkpoint)
            elif name == "drivable_classes":  # empty in the file: the checkpoint's names
                assert actual == ["Road"]
            elif value == []:
                assert actual in (None, [])  # rcl reads an empty YAML list as "not set"
            else:
                assert actual == value, name
        for name in declared:
            descriptor = node.describe_parameter(name)
            assert descriptor.description, name
            dynamic = name in DYNAMIC  # changeable at run time, as its spec says
            assert descriptor.read_only is not dynamic, name
        assert node.describe_parameter("overlay_alpha").floating_point_range[0].to_value == 1.0
        assert node.get_parameter("class_names").value[3] == "Road"
        assert len(node.get_parameter("palette").value) == 3 * 11
    finally:
        node.close()
        rclpy.try_shutdown(context=context)



def load_launch_file() -> Any:
    import importlib.util

    pytest.importorskip("launch_ros", reason="ROS 2 launch is not installed here")
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_grid_parameter_is_a_launch_argument() -> None:
    """camera_pose and the other grid settings can be given to ros2 launch, ints or floats."""
    pytest.importorskip("rclpy")
    pytest.importorskip("launch.actions", reason="the launch wheels (../shared) are not installed")
    from launch.actions import DeclareLaunchArgument

    from ssnet_ros.ros.parameters import PARAMETERS

    module = load_launch_file()
    module.get_package_share_directory = lambda package: str(ROOT)  # no install needed
    grid = {s.name for s in PARAMETERS if "grid" in s.name or s.name == "camera_pose"}
    assert set(module.GRID_ARGUMENTS) == grid
    declared = {a.name for a in module.generate_launch_description().entities
                if isinstance(a, DeclareLaunchArgument)}
    assert declared == ARGUMENTS | grid
    assert module.grid_overrides({"camera_pose": "[0, 0, 1.65, 0, 0, 0]", "grid_frame": "",
                                  "grid_x_range": "[0.0, 30]", "grid_resolution": "0.2",
                                  "publish_drivable_grid": "false"}) == {
        "camera_pose": [0.0, 0.0, 1.65, 0.0, 0.0, 0.0], "grid_x_range": [0.0, 30.0],
        "grid_resolution": 0.2, "publish_drivable_grid": False}
    for name, bad in (("camera_pose", "[0, 0, one]"), ("grid_y_range", "5"),
                      ("grid_resolution", "fine"), ("publish_drivable_grid", "maybe")):
        with pytest.raises(ValueError, match=f"launch argument {name}:="):
            module.grid_overrides({name: bad})
