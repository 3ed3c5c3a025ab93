"""ssnet-replay against the node running in its own process, over real DDS.

ROS domain 63 (the bag tests use ids in 60..79; other modules use other ids), localhost-only
discovery, the large-image Fast DDS profile, one OpenMP thread for the node.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from ssnet_ros.bags import messages as bm  # noqa: E402
from ssnet_ros.bags.bagfile import BagReader  # noqa: E402
from ssnet_ros.bags.make import make_bag  # noqa: E402
from ssnet_ros.bags.replay import ReplayOptions, main, replay  # noqa: E402
from ssnet_ros.ros.client import start_node, stop_node  # noqa: E402
from ssnet_ros.errors import SSNetError  # noqa: E402

from conftest import ros_domain  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

DOMAIN = 63
FRAMES, RATE = 30, 10.0  # a 10 Hz camera; the node needs ~50-150 ms per frame here


@pytest.fixture(scope="module")
def context() -> Iterator[Any]:
    """rclpy on DOMAIN; the environment it sets also reaches the node started below."""
    with ros_domain(DOMAIN) as ctx:
        yield ctx


@pytest.fixture(scope="module")
def node(context: Any, ssnet_checkpoint_varied: Path) -> Iterator[subprocess.Popen]:
    proc = start_node({"weights": str(ssnet_checkpoint_varied), "input_height": 48,
                       "input_width": 64, "diagnostics_period": 0.2})
    yield proc
    assert stop_node(proc) == 0
    log = proc.stdout.read()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("replay")
    images = root / "images"
    images.mkdir()
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    for i in range(FRAMES):
        rgb = np.stack([127 + 120 * np.sin(xx / (13 + 5 * c) + yy / 17 + 0.3 * i)
                        for c in range(3)], axis=-1).astype(np.uint8)
        cv2.imwrite(str(images / f"frame_{i}.png"), rgb)
    return make_bag(images, root / "drive", rate=RATE, progress=False).path


def stamps(bag: Path, topic: str) -> list[int]:
    with BagReader(bag) as reader:
        return [bm.stamp_ns(bm.deserialize(m.data, m.msgtype).header)
                for m in reader.messages([topic])]


def check_accounting(report: dict[str, Any]) -> None:
    """Every frame sent was answered, skipped by the node, or lost on the way to it."""
    assert report["frames_sent"] == FRAMES
    assert report["frames_skipped_by_node"] is not None, "no /diagnostics from the node"
    assert report["frames_answered"] + report["frames_skipped_by_node"] + \
        report["frames_lost_before_node"] == FRAMES
    assert report["outputs_unexpected"] == 0


def test_camera_rate_and_five_times(context: Any, node: subprocess.Popen, camera_bag: Path,
                                    tmp_path: Path) -> None:
    one = replay(context, camera_bag, ReplayOptions(rate=1.0, out=tmp_path / "x1",
                                                    progress=False))
    check_accounting(one)
    assert one["recorded_rate_hz"] == pytest.approx(RATE)
    assert one["send_rate_hz"] == pytest.approx(RATE, rel=0.15)
    assert one["frames_answered"] >= FRAMES // 2
    assert 0 < one["latency_ms"]["p50"] <= one["latency_ms"]["p99"]
    recorded = Path(one["output_bag"])
    sent = stamps(recorded, "/image")
    labels = stamps(recorded, "/segmentation/labels")
    assert len(sent) == FRAMES and len(labels) == one["frames_answered"]
    assert set(labels) <= set(sent) and labels == sorted(labels)
    assert len(stamps(recorded, "/segmentation/overlay")) == one["frames_answered"]

    five = replay(context, camera_bag, ReplayOptions(rate=5.0, progress=False))
    check_accounting(five)  # every frame answered, skipped by the node or lost on the way
    assert five["send_rate_hz"] == pytest.approx(5 * RATE, rel=0.3)
    # Bounded backlog, whatever the machine: a node that cannot keep up at 50 Hz skips (a
    # queue of 30 frames would take 20-30 inference times to work off, and the latency would
    # grow over the run); one that can (a fast CPU, a GPU) answers each frame in about one
    # inference time. Ratios to the 1x run's latency, not absolute limits (busy machines).
    lat, quarters = five["latency_ms"], five["latency_p50_ms_by_quarter"]
    one_frame = one["latency_ms"]["p50"]
    assert lat["max"] < 10 * one_frame, (lat, one_frame)
    assert quarters[3] < 3 * max(quarters[0], one_frame), (quarters, one_frame)


def test_cli_lockstep_reports(node: subprocess.Popen, camera_bag: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lockstep"
    args = [str(camera_bag), "--lockstep", "--limit", "8", "--out", str(out), "--no-progress",
            "--keep-stamps"]
    assert main(args) == 0
    report = json.loads((out / "replay.json").read_text())
    assert report["mode"] == "lockstep" and report["frames_sent"] == 8
    assert report["frames_skipped_by_node"] == 0 and report["frames_answered"] >= 7
    assert "| frames answered |" in (out / "replay.md").read_text()
    assert "latency p99 ms" in capsys.readouterr().out
    kept = stamps(out / "drive", "/segmentation/labels")  # recorded stamps were kept
    assert set(kept) <= set(stamps(camera_bag, "/camera/image_raw")[:8])
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_no_node_is_one_clear_error(context: Any, camera_bag: Path) -> None:
    with pytest.raises(SSNetError, match=r"no ssnet node answered on /nobody/image"):
        replay(context, camera_bag, ReplayOptions(namespace="/nobody", start_timeout=2.0,
                                                  progress=False))


def test_a_remapped_input_is_named_in_the_error(context: Any, node: subprocess.Popen,
                                               camera_bag: Path) -> None:
    with pytest.raises(SSNetError, match=r"subscribes to /image: pass --namespace / "
                                         r"--input-topic image"):
        replay(context, camera_bag, ReplayOptions(input_topic="camera/image_raw",
                                                  start_timeout=5.0, progress=False))


def test_repeated_stamps_and_a_clock_jump(context: Any, node: subprocess.Popen,
                                          tmp_path: Path) -> None:
    """--keep-stamps with every stamp twice, and the bag clock jumping a day forward."""
    from ssnet_ros.bags.bagfile import BagWriter

    t0 = 1_700_000_000 * 10**9
    with BagWriter(tmp_path / "odd") as writer:
        writer.add_topic("/camera/image_raw", bm.IMAGE)
        for i in range(20):
            rgb = np.full((48, 64, 3), 10 * i, np.uint8)
            stamp = t0 + (i // 2) * 10**8  # each header stamp twice
            when = t0 + i * 5 * 10**7 + (86_400 * 10**9 if i >= 10 else 0)
            writer.write("/camera/image_raw", when, bm.image(rgb, bm.header(stamp, "cam")))
    start = time.monotonic()
    report = replay(context, tmp_path / "odd", ReplayOptions(rate=1.0, restamp=False,
                                                             progress=False))
    assert time.monotonic() - start < 30
    assert report["frames_sent"] == 20 and report["frames_with_repeated_stamps"] == 10
    assert [g["frame"] for g in report["bag_clock_gaps_skipped"]] == [10]
    lost = report["frames_lost_before_node"]
    assert lost is not None and 0 <= lost <= 20
