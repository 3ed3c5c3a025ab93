"""The drivable trust over real DDS: the node's segmentation/drivable_trust topic, its
/diagnostics WARN below trust_threshold, and unknown grid cells with trust_unknown_grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, RelativeHumidity  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402

from ssnet_ros.core.ground_grid import kitti_camera  # noqa: E402
from ssnet_ros.core.segmenter import Segmenter  # noqa: E402
from ssnet_ros.core.trust import TrustModel  # noqa: E402
from ssnet_ros.ros.client import SegmentationClient, image_msg, start_node, \
    stop_node  # noqa: E402
from ssnet_ros.training.fit_trust import write_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random RGB image (the varied random model's labels change over it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    out = [127 + 120 * np.sin(xx / (17 + 9 * c) + yy / (23 + 5 * c) + phase[c])
           for c in range(3)]
    return np.stack(out, axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def trusted_checkpoint(ssnet_checkpoint_varied: Path, tmp_path_factory: Any) -> Path:
    """The varied random checkpoint with a trust model: sigmoid(4 * drivable share - 1)."""
    model = TrustModel(("drivable_share",), np.zeros(1), np.ones(1), np.array([4.0]), -1.0,
                       0.1, {"note": "test model"})
    path = tmp_path_factory.mktemp("trust") / "trusted.pt"
    write_checkpoint(ssnet_checkpoint_varied, path, model.to_dict(), overwrite=False)
    return path


def test_trust_reaches_topic_diagnostics_and_grid(ros_context: Any,
                                                  trusted_checkpoint: Path) -> None:
    """The trust of each frame comes on segmentation/drivable_trust with the image's header
    and the value the Segmenter computes; /diagnostics warns below trust_threshold with the
    reason; with trust_unknown_grid the grid of a low-trust frame is all unknown, and after
    trust_threshold falls to 0 (at run time) the same frame gives known cells again."""
    camera = kitti_camera(310, 94)
    proc = start_node({"weights": str(trusted_checkpoint), "drivable_classes": ["Pole", "Road"],
                       "camera_pose": [0.0, 0.0, 1.65, 0.0, 0.0, 0.0],
                       "grid_resolution": 0.5, "grid_x_range": [-2.0, 30.0],
                       "grid_y_range": [-10.0, 10.0], "trust_threshold": 0.999,
                       "trust_unknown_grid": True, "diagnostics_period": 0.2},
                      {"__ns": "/trust"})
    client = SegmentationClient(ros_context, outputs=("drivable_mask",), namespace="/trust",
                                name="trust_client")
    trusts: list[RelativeHumidity] = []
    grids: list[OccupancyGrid] = []
    node = client.node
    node.create_subscription(RelativeHumidity, "/trust/segmentation/drivable_trust",
                             trusts.append, 10)
    node.create_subscription(OccupancyGrid, "/trust/segmentation/drivable_grid",
                             grids.append, 10)
    info_pub = node.create_publisher(CameraInfo, "/trust/camera_info", 10)
    segmenter = Segmenter(trusted_checkpoint, device="cpu", drivable_classes=["Pole", "Road"])

    def frame(seed: int, stamp: int) -> tuple[Any, RelativeHumidity, OccupancyGrid]:
        msg = image_msg(scene(94, 310, seed), stamp)
        for _ in range(5):
            client.send(msg)
            if client.spin_until(lambda: any(t.header.stamp == msg.header.stamp
                                             for t in trusts) and
                                 any(g.header.stamp == msg.header.stamp for g in grids),
                                 10.0, proc):
                break
        trust = next(t for t in trusts if t.header.stamp == msg.header.stamp)
        grid = next(g for g in grids if g.header.stamp == msg.header.stamp)
        return msg, trust, grid

    try:
        if not client.wait_for_node(60.0, proc):
            stop_node(proc)
            pytest.fail(f"node did not answer; its output:\n{proc.stdout.read()}")
        info = CameraInfo(width=310, height=94, distortion_model="plumb_bob",
                          k=list(camera.k), d=[0.0] * 5)
        for _ in range(5):
            info_pub.publish(info)
            client.spin_until(lambda: False, 0.1)
        msg, trust, grid = frame(3, 10**9 * 20)
        assert trust.header.frame_id == msg.header.frame_id == "camera"
        expected = segmenter(scene(94, 310, 3)).drivable_trust
        assert expected is not None and 0.0 < expected < 0.999
        assert trust.relative_humidity == pytest.approx(expected, abs=1e-5)
        assert trust.variance == pytest.approx(0.01)
        assert (np.array(grid.data) == -1).all()  # low trust: every cell unknown
        def reports(value: float) -> bool:  # diagnostics of this frame (not of a probe)
            try:
                return abs(float(client.diagnostics.get("drivable_trust", "")) - value) < 1e-3
            except ValueError:
                return False

        assert client.spin_until(lambda: client.diagnostics.get("level") == "1"
                                 and reports(expected), 10.0, proc)
        d = client.diagnostics
        assert d["message"].startswith("drivable trust ") and "below trust_threshold" in \
            d["message"] and "little drivable area" in d["message"], d["message"]
        assert float(d["drivable_trust"]) == pytest.approx(expected, abs=1e-3)
        assert int(d["frames_low_trust"]) >= 1 and int(d["published_drivable_trust"]) >= 1

        set_client = node.create_client(SetParameters, "/trust/ssnet/set_parameters")
        assert set_client.wait_for_service(timeout_sec=10.0)
        request = SetParameters.Request(parameters=[
            Parameter("trust_threshold", Parameter.Type.DOUBLE, 0.0).to_parameter_msg()])
        future = set_client.call_async(request)
        assert client.spin_until(future.done, 10.0, proc)
        assert future.result().results[0].successful
        _, trust, grid = frame(3, 10**9 * 40)
        data = np.array(grid.data)
        assert (data != -1).sum() > 100 and set(np.unique(data)) <= {-1, 0, 100}
        assert client.spin_until(lambda: client.diagnostics.get("level") == "0", 10.0, proc)
    finally:
        client.close()
        assert stop_node(proc) == 0
    log = proc.stdout.read()
    assert "Traceback" not in log, log
