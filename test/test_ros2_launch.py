"""The ROS user path for real: colcon build, `ros2 launch` (plain, managed, rviz:=true without
rviz2) and `ros2 run`, in a temporary workspace, over real DDS.

Needs the ROS 2 launch tooling, which is not on PyPI: `make venv` installs it from
../shared/ros2_launch_wheels where that folder exists (see its README); elsewhere these tests
skip saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOW = ("needs the ROS 2 launch tooling (launch_ros, ros2cli, colcon): `make venv` installs it "
       "from ../shared/ros2_launch_wheels when that folder exists")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

for module in ("launch_ros", "ros2cli", "colcon_core", "psutil"):
    pytest.importorskip(module, reason=HOW)
if not (BIN / "ros2").is_file() or not (BIN / "colcon").is_file():
    pytest.skip(HOW, allow_module_level=True)

import psutil  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402

from ssnet_ros.ros.client import SegmentationClient, image_msg  # noqa: E402

IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "install", "log", "demo_out", "runs",
                                "results", "bags", "replay", "__pycache__", "*.egg-info")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built with colcon in a fresh workspace (install/ holds it)."""
    ws = tmp_path_factory.mktemp("ros2_ws")
    shutil.copytree(ROOT, ws / "src" / "ssnet_ros", ignore=IGNORE)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(BIN / "colcon"), "build", "--packages-select", "ssnet_ros",
                           "--event-handlers", "console_direct-"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ws


def ros_env(ws: Path) -> dict[str, str]:
    """What `source install/setup.bash` gives, with the venv's ROS wheels as an ament prefix."""
    prefix = ws / "install" / "ssnet_ros"
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    env = dict(os.environ)
    env.update(AMENT_PREFIX_PATH=f"{prefix}:{sys.prefix}",
               PYTHONPATH=f"{site}:{env.get('PYTHONPATH', '')}".rstrip(":"),
               PATH=f"{BIN}:{env.get('PATH', '')}")
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)  # the launch file sets the installed one
    return env


def launch(ws: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ros2"), "launch", "ssnet_ros", "segment.launch.py",
                             *args], env=ros_env(ws), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int, str, list[int]]:
    """SIGINT ``ros2 launch`` as Ctrl-C does; (exit code, output, processes left running)."""
    children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    time.sleep(0.5)
    left = [pid for pid in children if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    return proc.returncode, out, left


def answers(client: SegmentationClient, proc: subprocess.Popen, timeout: float = 120.0
            ) -> Any:
    """Send frames until the node answers one; that frame's outputs (None if it never does)."""
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    assert client.spin_until(lambda: client.publisher.get_subscription_count() > 0, timeout,
                             proc), "the node never subscribed"
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline and proc.poll() is None:
        n += 1
        msg = image_msg(rgb, 1_700_000_000 * 10**9 + n, "cam_front")
        client.send(msg)
        got = client.wait_outputs(msg.header, timeout=2.0, proc=proc)
        if got is not None:
            return msg.header, got
    return None


def test_colcon_installs_the_package(workspace: Path) -> None:
    prefix = workspace / "install" / "ssnet_ros"
    share = prefix / "share" / "ssnet_ros"
    for path in ("package.xml", "launch/segment.launch.py", "config/ssnet.yaml",
                 "config/ssnet.rviz", "config/fastdds_large_images.xml"):
        assert (share / path).is_file(), path
    for exe in ("segmentation_node", "segmentation_lifecycle_node"):
        assert os.access(prefix / "lib" / "ssnet_ros" / exe, os.X_OK), exe
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" /
            "ssnet_ros").is_file()
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    assert (site / "ssnet_ros" / "weights" / "ssnet_camvid.pt").stat().st_size > 10**7


def test_ros2_run_starts_the_installed_executables(workspace: Path) -> None:
    for exe in ("segmentation_node", "segmentation_lifecycle_node"):
        proc = subprocess.run([str(BIN / "ros2"), "run", "ssnet_ros", exe, "--help"],
                              env=ros_env(workspace), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: {exe} ") and "weights (string" in proc.stdout


def test_ros2_launch_with_namespace_and_remap_then_sigint(
        workspace: Path, ros_context: Any, ssnet_checkpoint_varied: Path) -> None:
    """rviz:=true on a machine without rviz2: a warning, the node alone, nothing left over."""
    proc = launch(workspace, "namespace:=front", "image_topic:=/cam_front/image_raw",
                  f"weights:={ssnet_checkpoint_varied}", "rviz:=true")
    client = SegmentationClient(ros_context, outputs=("labels", "drivable_mask"),
                                namespace="/front", image_topic="/cam_front/image_raw",
                                name="launch_client")
    topic = client.subscriptions["labels"].topic_name
    try:
        answered = answers(client, proc)
    finally:
        client.close()
        code, out, left = stop(proc)
    assert answered is not None, out[-3000:]
    header, outputs = answered
    assert outputs["labels"].header == header and outputs["labels"].width == 64
    assert topic == "/front/segmentation/labels"
    assert "rviz2 is not installed here" in out
    assert code == 0, out[-3000:]
    assert left == [], out[-3000:]
    assert "Traceback" not in out and "process has died" not in out, out[-3000:]


def get_state(client: SegmentationClient, timeout: float = 60.0) -> str:
    cli = client.node.create_client(GetState, "/ssnet/get_state")
    try:
        assert client.spin_until(cli.service_is_ready, timeout)
        future = cli.call_async(GetState.Request())
        assert client.spin_until(future.done, timeout)
        return future.result().current_state.label
    finally:
        client.node.destroy_client(cli)


@pytest.mark.parametrize("autostart", [True, False])
def test_ros2_launch_managed(workspace: Path, ros_context: Any, ssnet_checkpoint_varied: Path,
                             autostart: bool) -> None:
    proc = launch(workspace, "managed:=true", f"autostart:={str(autostart).lower()}",
                  f"weights:={ssnet_checkpoint_varied}", "image_topic:=/cam_front/image_raw")
    client = SegmentationClient(ros_context, outputs=("labels",),
                                image_topic="/cam_front/image_raw",
                                name=f"managed_client_{autostart}")
    try:
        if autostart:  # configure and activate from the launch file
            answered = answers(client, proc)
            state = get_state(client)
        else:
            state = get_state(client)
            client.send(image_msg(np.zeros((48, 64, 3), np.uint8), 1, "cam_front"))
            answered = client.spin_until(lambda: bool(client.received), 3.0, proc) or None
    finally:
        client.close()
        code, out, left = stop(proc)
    if autostart:
        assert answered is not None and state == "active", out[-3000:]
    else:
        assert state == "unconfigured" and answered is None, out[-3000:]
    assert code == 0 and left == [], out[-3000:]
