"""``ssnet-replay``: play a bag's camera topic into a running ssnet node and measure it live.

Frames go out over real ROS 2 the way a camera driver sends them (best effort, newest only) at
the recorded rate times ``--rate`` (``--lockstep``: each frame as soon as the previous one was
answered). Each frame is restamped with the time it is sent (``--keep-stamps`` keeps the
recorded stamps), so latency is what a consumer on the vehicle computes: output arrival minus
header stamp. The node's outputs are recorded into a new bag beside the frames sent.

The report says what a vehicle would see: frames sent, answered, skipped by the node (from its
/diagnostics), lost before reaching it, and end-to-end latency percentiles, overall and per
quarter of the run (a growing backlog would show as rising quarters).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.serialization import serialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from tqdm import tqdm

from . import messages as bm
from .bagfile import STORAGES, BagReader, BagWriter, check_output, image_topic, qos
from ..ros.client import SegmentationClient, use_large_image_profile
from ..errors import SSNetError
from ..core import options as cli
from ..core.fileio import check_file_output, write_json, write_text
from ..ros.node import NODE_NAME, OUTPUTS
from ..core.stats import fmt as _fmt
from ..core.stats import ms_summary as _latency_ms

DEFAULT_OUTPUTS = ("labels", "drivable_mask", "overlay")


@dataclass
class ReplayOptions:
    """How to replay (the command-line options of ssnet-replay)."""

    topic: str | None = None
    """Image topic of the bag; None: its only Image or CompressedImage topic."""
    rate: float = 1.0
    """Factor of the recorded rate (2.0: twice as fast); 0: lockstep."""
    namespace: str = "/"
    node_name: str = NODE_NAME
    input_topic: str = "image"
    """The node's input topic (relative to ``namespace``); /compressed is added for
    CompressedImage bags."""
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    restamp: bool = True
    limit: int | None = None
    start_timeout: float = 60.0
    answer_timeout: float = 10.0
    """Seconds to wait for an answer (lockstep) and at most for the last answers."""
    out: Path | None = None
    storage: str = "mcap"
    overwrite: bool = False
    progress: bool = True


@dataclass
class _Sent:
    index: int
    time: float
    arrival: float | None = None
    """When the frame's first output arrived."""
    outputs: int = 0


class _Recorder:
    """Collects the node's answers (and records them into a bag when one is open)."""

    def __init__(self, outputs: Sequence[str]) -> None:
        self.writer: BagWriter | None = None
        self.topics: dict[str, str] = {}
        """Output key -> full topic name in the recorded bag."""
        self.sent: dict[tuple[int, int], _Sent] = {}
        """Stamp -> the latest frame sent with it (outputs are matched by stamp)."""
        self.frames: list[_Sent] = []
        """Every frame sent, in order (repeated stamps included)."""
        self.counts = dict.fromkeys(outputs, 0)
        self.unexpected = 0
        self.last_arrival = 0.0

    def on_output(self, key: str, msg: Image) -> None:
        now = time.monotonic()
        self.last_arrival = now
        self.counts[key] += 1
        frame = self.sent.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        if frame is None:
            self.unexpected += 1
        else:
            frame.outputs += 1
            if frame.arrival is None:
                frame.arrival = now
        if self.writer is not None:
            self.writer.write_raw(self.topics[key], time.time_ns(), serialize_message(msg))

    def complete(self) -> bool:
        """True when every frame sent has all its outputs."""
        return all(f.outputs >= len(self.counts) for f in self.sent.values())

    def add(self, key: tuple[int, int], frame: _Sent) -> bool:
        """Record a sent frame; False when its stamp repeats one sent before."""
        repeated = key in self.sent
        self.sent[key] = frame
        self.frames.append(frame)
        return not repeated


MAX_GAP_S = 2.0
"""A forward jump of the bag clock longer than this (seconds) is skipped, not waited out."""


def _diag_snapshot(client: SegmentationClient, fresh: int, timeout: float) -> dict[str, str]:
    """The node's diagnostics after ``fresh`` new /diagnostics messages ({} on timeout)."""
    target = client.diagnostics_count + fresh
    client.spin_until(lambda: client.diagnostics_count >= target, timeout)
    return dict(client.diagnostics) if client.diagnostics_count >= target else {}


def _settled_snapshot(client: SegmentationClient, timeout: float) -> dict[str, str]:
    """Diagnostics once the node's frame counters stopped moving (a start-up probe still in
    flight would otherwise count as a replayed frame)."""
    deadline = time.monotonic() + timeout
    keys = ("frames_received", "frames_processed")
    prev = _diag_snapshot(client, 1, timeout)
    while prev and time.monotonic() < deadline:
        cur = _diag_snapshot(client, 2, max(0.1, deadline - time.monotonic()))
        if not cur or all(cur.get(k) == prev.get(k) for k in keys):
            return cur or prev
        prev = cur
    return prev


def _delta(after: dict[str, str], before: dict[str, str], key: str) -> int | None:
    try:
        return int(after[key]) - int(before[key])
    except (KeyError, ValueError):
        return None


def replay(context: Context, bag: str | Path, options: ReplayOptions) -> dict[str, Any]:
    """Replay ``bag`` into the running node reachable in ``context``; return the report."""
    if options.rate < 0:
        raise SSNetError(f"rate must be > 0 (or 0 for lockstep), got {options.rate}")
    unknown = [k for k in options.outputs if k not in OUTPUTS]
    if unknown or not options.outputs:
        raise SSNetError(f"outputs must be among {', '.join(OUTPUTS)}, got "
                         f"{', '.join(options.outputs) or 'none'}")
    with BagReader(bag) as reader:
        topic = image_topic(reader, options.topic)
        compressed = reader.topics[topic].msgtype == bm.COMPRESSED
        output = None
        if options.out is not None:
            output = Path(options.out) / reader.name
            check_output(output, options.overwrite)
        rec = _Recorder(options.outputs)
        client = SegmentationClient(context, outputs=options.outputs,
                                    namespace=options.namespace,
                                    image_topic=options.input_topic, compressed=compressed,
                                    name="ssnet_replay", node_name=options.node_name,
                                    on_output=rec.on_output)
        rec.topics = {key: client.subscriptions[key].topic_name for key in options.outputs}
        input_topic = client.publisher.topic_name
        try:
            if not client.wait_for_node(options.start_timeout):
                hint = _no_answer_hint(client, options)
                raise SSNetError(f"no ssnet node answered on {input_topic} within "
                                 f"{options.start_timeout:.0f} s; {hint}")
            before = _settled_snapshot(client, 10.0)
            if output is None:
                report = _run(client, reader, topic, rec, options)
            else:
                with BagWriter(output, storage=options.storage,
                               overwrite=options.overwrite) as writer:
                    writer.add_topic(input_topic, reader.topics[topic].msgtype,
                                     reader.topics[topic].qos)
                    for name in rec.topics.values():
                        writer.add_topic(name, bm.IMAGE, [qos(True, 2)])
                    rec.writer = writer
                    try:
                        report = _run(client, reader, topic, rec, options)
                    finally:
                        rec.writer = None
            after = _diag_snapshot(client, 2, 10.0) if before else {}
        finally:
            client.close()
    skipped = _delta(after, before, "frames_skipped")
    received = _delta(after, before, "frames_received")
    report.update(
        bag=str(bag), topic=topic, output_bag=str(output) if output else None,
        input_topic=input_topic,
        frames_skipped_by_node=skipped,
        frames_received_by_node=received,
        frames_lost_before_node=None if received is None else report["frames_sent"] - received,
        frames_rejected_by_node=_delta(after, before, "frames_rejected"),
        node={k: after.get(k) for k in ("weights", "device", "precision", "network_input",
                                        "inference_p50_ms", "inference_p99_ms")} if after
        else None,
        damage=reader.damage)
    return report


def _run(client: SegmentationClient, reader: BagReader, topic: str, rec: _Recorder,
         opt: ReplayOptions) -> dict[str, Any]:
    writer = rec.writer
    pub_topic = client.publisher.topic_name
    executor = client.executor
    total = reader.topics[topic].count
    bar = tqdm(total=total if opt.limit is None else min(total or opt.limit, opt.limit),
               desc=f"replay {reader.name} "
                    f"{'lockstep' if opt.rate == 0 else f'{opt.rate:g}x'}",
               unit="frame", disable=not opt.progress, file=sys.stderr)
    t_start = time.monotonic()
    first_ts = last_ts = None
    last_stamp = 0
    repeated, gaps = 0, []
    clock_shift = 0
    for index, raw in enumerate(reader.messages([topic])):
        if opt.limit is not None and index >= opt.limit:
            break
        first_ts = raw.timestamp if first_ts is None else first_ts
        if last_ts is not None and (raw.timestamp - last_ts) / 1e9 > MAX_GAP_S:
            # the bag clock jumps forward (a pause, a merged recording): do not wait it out
            gaps.append({"frame": index, "seconds": (raw.timestamp - last_ts) / 1e9})
            clock_shift += raw.timestamp - last_ts - int(1e9 / 30)
        last_ts = raw.timestamp
        if opt.rate > 0:
            target = t_start + (raw.timestamp - first_ts - clock_shift) / 1e9 / opt.rate
            while (remaining := target - time.monotonic()) > 0:
                executor.spin_once(timeout_sec=min(remaining, 0.01))
        if opt.restamp:
            last_stamp = max(time.time_ns(), last_stamp + 1)
            data = bm.with_stamp(raw.data, last_stamp)
            key = divmod(last_stamp, 1_000_000_000)
        else:
            data = bytes(raw.data)
            key = bm.cdr_stamp(data)
        frame = _Sent(index, time.monotonic())
        repeated += not rec.add(key, frame)
        client.send(data)
        if writer is not None:
            writer.write_raw(pub_topic, time.time_ns(), data)
        bar.update(1)
        if opt.rate == 0:
            client.spin_until(lambda: frame.arrival is not None, opt.answer_timeout)
    bar.close()
    send_end = time.monotonic()
    # Drain: until every frame has all its outputs, or outputs stop coming (skipped frames
    # never get any).
    deadline = send_end + opt.answer_timeout
    while not rec.complete() and time.monotonic() < deadline:
        latencies = [f.arrival - f.time for f in rec.sent.values() if f.arrival is not None]
        quiet = max(1.0, 3 * max(latencies, default=0.0))
        if time.monotonic() - max(rec.last_arrival, send_end) > quiet:
            break
        executor.spin_once(timeout_sec=0.02)
    frames = rec.frames
    latencies = [f.arrival - f.time for f in frames if f.arrival is not None]
    quarters = [frames[i * len(frames) // 4:(i + 1) * len(frames) // 4] for i in range(4)]
    sent_span = send_end - t_start
    recorded_span = ((last_ts or 0) - (first_ts or 0) - clock_shift) / 1e9
    n = len(frames)
    return {
        "tool": "ssnet-replay",
        "mode": "lockstep" if opt.rate == 0 else "rate",
        "rate_factor": opt.rate if opt.rate > 0 else None,
        "restamped": opt.restamp,
        "recorded_rate_hz": (n - 1) / recorded_span if n > 1 and recorded_span > 0 else None,
        "send_rate_hz": (n - 1) / sent_span if n > 1 and sent_span > 0 else None,
        "frames_sent": n,
        "frames_answered": len(latencies),
        "frames_unanswered": n - len(latencies),
        "answer_rate_hz": len(latencies) / (rec.last_arrival - t_start)
        if latencies and rec.last_arrival > t_start else None,
        "latency_ms": _latency_ms(latencies),
        "latency_p50_ms_by_quarter": [
            _latency_ms([f.arrival - f.time for f in q if f.arrival is not None])["p50"]
            for q in quarters],
        "latency_ms_per_frame": [None if f.arrival is None else (f.arrival - f.time) * 1e3
                                 for f in frames],
        "outputs_received": rec.counts,
        "outputs_unexpected": rec.unexpected,
        "frames_with_repeated_stamps": repeated,
        "bag_clock_gaps_skipped": gaps,
        "seconds": time.monotonic() - t_start,
    }


def replay_markdown(report: dict[str, Any]) -> str:
    """The replay report for people."""
    lat = report["latency_ms"]
    mode = "lockstep (each frame once the last was answered)" if report["mode"] == "lockstep" \
        else f"{report['rate_factor']:g}x the recorded rate"
    quarters = " / ".join(_fmt(v) for v in report["latency_p50_ms_by_quarter"])
    skipped = report["frames_skipped_by_node"]
    lost = report["frames_lost_before_node"]
    lines = [
        f"# Live replay of {Path(report['bag']).name} ({report['topic']})", "",
        f"{mode}: recorded {_fmt(report['recorded_rate_hz'], 2)} Hz, sent "
        f"{_fmt(report['send_rate_hz'], 2)} Hz to {report['input_topic']}, answered "
        f"{_fmt(report['answer_rate_hz'], 2)} Hz.", "",
        "| | |", "|---|---:|",
        f"| frames sent | {report['frames_sent']} |",
        f"| frames answered | {report['frames_answered']} |",
        f"| frames skipped by the node | {'n/a' if skipped is None else skipped} |",
        f"| frames lost before the node | {'n/a' if lost is None else lost} |",
        f"| latency p50 ms | {_fmt(lat['p50'])} |",
        f"| latency p90 ms | {_fmt(lat['p90'])} |",
        f"| latency p99 ms | {_fmt(lat['p99'])} |",
        f"| latency max ms | {_fmt(lat['max'])} |",
        f"| latency p50 ms by quarter of the run | {quarters} |", "",
        "Latency: output arrival minus the frame's header stamp (the send time).",
    ]
    if report["output_bag"]:
        lines += ["", f"Recorded frames and outputs: {report['output_bag']}"]
    if report["damage"]:
        lines += ["", f"The input bag is damaged: {report['damage']}"]
    return "\n".join(lines) + "\n"


def _no_answer_hint(client: SegmentationClient, options: ReplayOptions) -> str:
    """What to change when no node answered: the image topics a node of that name subscribes
    to (its input was remapped), the namespaces where ssnet nodes run, or start one."""
    graph = client.node
    found = []
    deadline = time.monotonic() + 3.0  # discovery of the graph may lag on a loaded machine
    names = graph.get_node_names_and_namespaces()
    while not any(n == options.node_name for n, _ in names) and time.monotonic() < deadline:
        client.spin_until(lambda: False, 0.2)
        names = graph.get_node_names_and_namespaces()
    for name, namespace in names:
        if name != options.node_name:
            continue
        try:
            subs = graph.get_subscriber_names_and_types_by_node(name, namespace)
        except Exception:  # the node left meanwhile
            continue
        images = [topic for topic, types in subs
                  if any(t.startswith("sensor_msgs/msg/") and "Image" in t for t in types)]
        found.append((namespace, images))
    if not found:
        return (f"no node named {options.node_name!r} is running; start it first "
                f"(.venv/bin/python -m ssnet_ros.node --ros-args -p weights:=ssnet_camvid), "
                f"or give its name with --node-name")
    hints = []
    for namespace, images in found:
        if images:
            hints.append(f"node {namespace.rstrip('/')}/{options.node_name} subscribes to "
                         f"{', '.join(images)}: pass --namespace {namespace} --input-topic "
                         f"{images[0].split('/')[-1] if len(images) == 1 else images[0]}")
        else:
            hints.append(f"node {namespace.rstrip('/')}/{options.node_name} subscribes to no "
                         f"image topic")
    return "; ".join(hints)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-replay."""
    p = cli.parser("ssnet-replay", __doc__)
    p.add_argument("bag", type=Path, help="rosbag2 directory (or .mcap/.db3)")
    p.add_argument("--topic", default=None, help="image topic of the bag (default: the only)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=1.0,
                      help="speed factor of the recorded rate (as ros2 bag play --rate), e.g. "
                           "1, 2, 5")
    pace.add_argument("--lockstep", action="store_true",
                      help="send each frame as soon as the node answered the previous one")
    p.add_argument("--namespace", default="/", help="the node's namespace")
    p.add_argument("--node-name", default=NODE_NAME, help="the node's name (for diagnostics)")
    p.add_argument("--input-topic", default="image",
                   help="the node's input topic, relative to --namespace")
    p.add_argument("--outputs", nargs="+", choices=sorted(OUTPUTS), default=DEFAULT_OUTPUTS,
                   help="node outputs to subscribe to and record")
    p.add_argument("--keep-stamps", action="store_true",
                   help="send the recorded header stamps instead of the send time")
    cli.add(p, "--limit")
    p.add_argument("--start-timeout", type=float, default=60.0,
                   help="seconds to wait for the node to answer")
    p.add_argument("--answer-timeout", type=float, default=10.0,
                   help="seconds to wait for an answer (lockstep) and for the last answers")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the recorded bag and replay.json / replay.md")
    p.add_argument("--storage", choices=STORAGES, default="mcap",
                   help="storage of the recorded bag")
    cli.add(p, "--overwrite", "--no-progress")
    return p


@cli.entry_point("ssnet-replay", interrupted="nothing written", prefix="error: ")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-replay."""
    args = build_parser().parse_args(argv)
    if args.rate <= 0 and not args.lockstep:
        raise SSNetError("--rate must be > 0 (use --lockstep to follow the node)")
    options = ReplayOptions(topic=args.topic, rate=0.0 if args.lockstep else args.rate,
                            namespace=args.namespace, node_name=args.node_name,
                            input_topic=args.input_topic, outputs=tuple(args.outputs),
                            restamp=not args.keep_stamps, limit=args.limit or None,
                            start_timeout=args.start_timeout,
                            answer_timeout=args.answer_timeout, out=args.out,
                            storage=args.storage, overwrite=args.overwrite,
                            progress=not args.no_progress)
    use_large_image_profile()
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        if args.out is not None:
            for name in ("replay.json", "replay.md"):
                check_file_output(args.out / name, args.overwrite)
        report = replay(context, args.bag, options)
    finally:
        rclpy.try_shutdown(context=context)
    text = replay_markdown(report)
    if args.out is not None:
        write_json(args.out / "replay.json", report)
        write_text(args.out / "replay.md", text)
    print(text)
    if report["damage"]:
        print(f"ssnet-replay: error: bag {args.bag} is damaged: {report['damage']}; the frames "
              f"before the damage were replayed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
