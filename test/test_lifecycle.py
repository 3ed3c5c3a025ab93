"""The managed node over DDS: lifecycle_msgs ChangeState/GetState drive it through every
transition; outputs only while active; a bad weights file fails configure, fixable."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lifecycle_msgs")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402

from ssnet_ros.ros.client import (LIFECYCLE_MODULE, SegmentationClient, image_msg,  # noqa: E402
                                  start_node, stop_node)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]


def call(client: SegmentationClient, srv_type: Any, name: str, request: Any,
         timeout: float = 60.0) -> Any:
    cli = client.node.create_client(srv_type, name)
    try:
        assert client.spin_until(cli.service_is_ready, timeout), f"no service {name}"
        future = cli.call_async(request)
        assert client.spin_until(future.done, timeout), f"{name} did not answer"
        return future.result()
    finally:
        client.node.destroy_client(cli)


def state(client: SegmentationClient) -> str:
    return call(client, GetState, "/ssnet/get_state", GetState.Request()).current_state.label


def change(client: SegmentationClient, transition: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition))
    return call(client, ChangeState, "/ssnet/change_state", request).success


def set_string(client: SegmentationClient, name: str, value: str) -> bool:
    param = ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                         string_value=value))
    result = call(client, SetParameters, "/ssnet/set_parameters",
                  SetParameters.Request(parameters=[param]))
    return result.results[0].successful


def answered(client: SegmentationClient, stamp: int, proc: subprocess.Popen,
             timeout: float) -> bool:
    rgb = np.full((48, 64, 3), 90, np.uint8)
    msg = image_msg(rgb, stamp)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.send(msg)
        if client.wait_outputs(msg.header, timeout=1.0, proc=proc) is not None:
            return True
    return False


@pytest.fixture(scope="module")
def client(ros_context: Any) -> Iterator[SegmentationClient]:
    c = SegmentationClient(ros_context, outputs=("labels",), name="lifecycle_client")
    yield c
    c.close()


def test_transitions_over_dds(client: SegmentationClient, ssnet_checkpoint: Path,
                              tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    proc = start_node({"weights": str(missing), "input_height": 48, "input_width": 64},
                      module=LIFECYCLE_MODULE)
    try:
        assert state(client) == "unconfigured"
        # every parameter readable in one request, though nothing is loaded yet
        assert not change(client, Transition.TRANSITION_CONFIGURE)  # the weights are missing
        assert state(client) == "unconfigured"
        assert set_string(client, "weights", str(ssnet_checkpoint))  # fix it, configure again
        assert change(client, Transition.TRANSITION_CONFIGURE)
        assert state(client) == "inactive"
        assert not set_string(client, "weights", str(missing))  # refused once configured
        names = call(client, GetParameters, "/ssnet/get_parameters",
                     GetParameters.Request(names=["drivable_classes", "class_names"]))
        assert [v.string_array_value for v in names.values] == [
            ["Road"], ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                       "Fence", "Car", "Pedestrian", "Bicyclist"]]
        assert not answered(client, 1, proc, timeout=3.0)  # inactive: no outputs
        assert change(client, Transition.TRANSITION_ACTIVATE)
        assert state(client) == "active"
        assert answered(client, 2, proc, timeout=60.0)
        assert change(client, Transition.TRANSITION_DEACTIVATE)
        assert state(client) == "inactive"
        client.received.clear()
        assert not answered(client, 3, proc, timeout=3.0)
        assert change(client, Transition.TRANSITION_CLEANUP)
        assert state(client) == "unconfigured"
        assert change(client, Transition.TRANSITION_CONFIGURE)  # configurable again
        assert change(client, Transition.TRANSITION_ACTIVATE)
        assert answered(client, 4, proc, timeout=60.0)
        assert change(client, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert state(client) == "finalized"
    finally:
        code = stop_node(proc)
        log = proc.stdout.read()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert f"cannot configure: weights file {missing} does not exist" in log
