"""How much of the model's speed survives the ROS node: bare forward rate vs. node end to end.

    python -m ssnet_ros.benchmark_node --weights W --input-height 360 --input-width 480 \
        --frames 20 [--json result.json]

(a) bare: ``model(x)`` on a ready tensor at the network input size (same device, precision,
inference_mode); (b) node: frames per second through the node in its own process over real
DDS. The publisher keeps ``--window`` frames in flight (the node's one-slot mailbox holds the
next frame while the current one is segmented) and counts answered frames
(segmentation/labels) per second. The two alternate (bare, node, bare, ..., bare; the node
idles meanwhile) so that drifting machine load affects both alike.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import SSNetError
from .fileio import write_json
from .preprocessing import normalize, resize_input
from .segmenter import Segmenter


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ssnet_ros.benchmark_node",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="checkpoint file")
    p.add_argument("--input-height", type=int, required=True, help="network input height")
    p.add_argument("--input-width", type=int, required=True, help="network input width")
    p.add_argument("--frames", type=int, default=20, help="timed frames per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    p.add_argument("--image-height", type=int, default=0,
                   help="height of the published images (0: the network input height)")
    p.add_argument("--image-width", type=int, default=0,
                   help="width of the published images (0: the network input width)")
    p.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8")
    p.add_argument("--window", type=int, default=2, help="frames in flight (1: lock step)")
    p.add_argument("--rounds", type=int, default=2,
                   help="node measurements, each between two bare ones (cancels load drift)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads here and in the node (0: torch's default)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this long")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    return p.parse_args(argv)


def bare_forward_fps(seg: Segmenter, image: np.ndarray, frames: int, warmup: int) -> float:
    """Forward passes per second of the bare model on a ready tensor.

    The tensor is ``image`` preprocessed once (normalised, resized to the network input):
    the very input the node feeds the model, so value-dependent CPU speed (e.g. denormal
    floats in an untrained model) is the same in both measurements.
    """
    batch = torch.from_numpy(image[None]).to(seg.device)
    x = resize_input(normalize(batch, seg.card.mean, seg.card.std, dtype=seg.dtype,
                               channels_last=seg.channels_last), seg.input_size)
    sync = torch.cuda.synchronize if seg.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            seg.model(x)
        sync()
        start = time.perf_counter()
        for _ in range(frames):
            seg.model(x)
        sync()
    return frames / (time.perf_counter() - start)


class NodeUnderTest:
    """The node in its own process plus a client feeding it ``image`` (a context manager)."""

    def __init__(self, args: argparse.Namespace, image: np.ndarray) -> None:
        self.args, self.image = args, image

    def __enter__(self) -> NodeUnderTest:
        import rclpy

        from .client import SegmentationClient, image_msg, start_node, use_large_image_profile

        args = self.args
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        use_large_image_profile()
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        namespace = f"/ssnet_benchmark_{os.getpid()}"
        self.proc = start_node({"weights": args.weights, "input_height": args.input_height,
                                "input_width": args.input_width, "device": args.device,
                                "precision": args.precision}, {"__ns": namespace}, env=env)
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.answered: list[tuple[int, float]] = []  # (sequence number, arrival time)
        self.client = SegmentationClient(
            self.context, outputs=("labels",), namespace=namespace, name="ssnet_benchmark",
            on_output=lambda key, msg: self.answered.append((msg.header.stamp.nanosec,
                                                             time.perf_counter())))
        self.msg = image_msg(self.image, 0, "benchmark", encoding=args.encoding)
        self.sequence = self.sent = 0
        if not self.client.wait_for_node(args.timeout, self.proc):
            self.__exit__()
            raise SSNetError(f"the node did not answer:\n{self.log()}")
        return self

    def fps(self, frames: int, warmup: int) -> float:
        """Answered frames per second over ``frames`` frames after ``warmup`` frames."""
        args, client = self.args, self.client
        self.answered.clear()
        in_flight: collections.deque[int] = collections.deque()
        handled, total = 0, warmup + frames
        deadline = time.monotonic() + args.timeout
        last_progress = time.monotonic()
        while len(self.answered) < total:
            for seq, _ in self.answered[handled:]:  # an answer retires every older frame
                while in_flight and in_flight[0] <= seq:
                    in_flight.popleft()
                last_progress = time.monotonic()
            handled = len(self.answered)
            if time.monotonic() - last_progress > 60.0:  # every frame in flight was lost
                in_flight.clear()
                last_progress = time.monotonic()
            while len(in_flight) < args.window:
                self.sequence += 1
                self.msg.header.stamp.sec, self.msg.header.stamp.nanosec = 1, self.sequence
                client.send(self.msg)
                self.sent += 1
                in_flight.append(self.sequence)
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SSNetError(f"only {len(self.answered)} of {total} frames answered:\n"
                                 f"{self.log()}")
            client.executor.spin_once(timeout_sec=0.05)
        times = [t for _, t in self.answered]
        if warmup:
            return frames / (times[total - 1] - times[warmup - 1])
        return (frames - 1) / (times[-1] - times[0])

    def diagnostics(self) -> dict[str, str]:
        """The node's latest /diagnostics values."""
        count = self.client.diagnostics_count
        self.client.spin_until(lambda: self.client.diagnostics_count > count, 5.0)
        return dict(self.client.diagnostics)

    def log(self) -> str:
        """The node's output (stops it)."""
        from .client import stop_node

        stop_node(self.proc)
        return self.proc.stdout.read()[-3000:] if self.proc.stdout else ""

    def __exit__(self, *exc: object) -> None:
        import rclpy

        from .client import stop_node

        self.client.close()
        stop_node(self.proc)
        rclpy.try_shutdown(context=self.context)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both measurements, alternating (bare, node, bare, node, ..., bare), and their ratio."""
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (args.input_height, args.input_width)
    image_size = (args.image_height or size[0], args.image_width or size[1])
    seg = Segmenter(args.weights, device=args.device, precision=args.precision, input_size=size)
    image = np.random.default_rng(0).integers(0, 256, (*image_size, 3), dtype=np.uint8)
    bare, node = [], []
    with NodeUnderTest(args, image) as under_test:
        for _ in range(args.rounds):
            bare.append(bare_forward_fps(seg, image, args.frames, max(args.warmup, 1)))
            node.append(under_test.fps(args.frames, args.warmup))
        bare.append(bare_forward_fps(seg, image, args.frames, max(args.warmup, 1)))
        diag = under_test.diagnostics()
        sent = under_test.sent
    bare_fps, node_fps = float(np.mean(bare)), float(np.mean(node))
    return {
        "weights": str(args.weights), "device": str(seg.device),
        "precision": str(seg.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(), "network_input": list(size),
        "image_size": list(image_size), "encoding": args.encoding, "frames": args.frames,
        "rounds": args.rounds, "window": args.window,
        "bare_forward_fps": bare_fps, "node_fps": node_fps, "ratio": node_fps / bare_fps,
        "bare_forward_fps_runs": bare, "node_fps_runs": node, "frames_sent": sent,
        "node_diagnostics": diag,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    if not Path(args.weights).is_file():
        print(f"benchmark_node: weights file {args.weights} does not exist", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except SSNetError as exc:
        print(f"benchmark_node: {exc}", file=sys.stderr)
        return 1
    h, w = result["network_input"]
    print(f"network input {h}x{w}, {result['device']} {result['precision']}, "
          f"{result['torch_threads']} torch threads")
    print(f"bare forward : {result['bare_forward_fps']:.3f} frames/s (runs: "
          f"{', '.join(f'{v:.3f}' for v in result['bare_forward_fps_runs'])})")
    print(f"node end2end : {result['node_fps']:.3f} frames/s (runs: "
          f"{', '.join(f'{v:.3f}' for v in result['node_fps_runs'])})")
    print(f"ratio        : {100 * result['ratio']:.1f}% of the bare forward rate")
    diag = result["node_diagnostics"]
    if diag:
        print("node p50 ms  : " + ", ".join(
            f"{stage} {diag.get(f'{stage}_p50_ms', '?')}"
            for stage in ("conversion", "inference", "publishing", "total"))
            + f"; frames sent {result['frames_sent']}, answered {diag.get('frames_processed')}"
            f", skipped {diag.get('frames_skipped')}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
