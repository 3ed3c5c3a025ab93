"""SSNet speed against the device's limit: model, inference core and node, batch 1 and N cameras.

    .venv/bin/ssnet-benchmark [--weights W [W2 ...]] [--sizes 375x1242,360x480] \\
        [--batches 1,4] \\
        [--precisions fp16,bf16,fp32] [--stages model,core,grid,node] [--frames 5] \\
        [--threads 1] \\
        [--compare-nodes 4] [--out bench.json]

Sizes are height x width (HxW), as everywhere in ssnet_ros.

Stages, each fed frames at the camera resolution:

* model: ``model(x)`` on a ready normalised batch on the device at the camera resolution
  (eager);
* core: :meth:`Segmenter.render_batch` from uint8 frames in host memory to labels and
  drivable mask in host memory (on CUDA: pinned copies and CUDA-graph replay); the network
  runs at the size the model card's rule gives the frame (e.g. 375x1242 -> 232x760), and
  its FLOPs are counted at that size;
* grid: the drivable grid's per-frame cost beside inference: sampling a 400x400-cell grid
  (0.1 m, 40 x 40 m) from the drivable masks of the batch's cameras (one fused grid for N
  cameras, as the node does) from the numpy masks in host memory, as the node samples
  them (the same on CUDA); the cell-to-pixel
  lookup is computed once, as in the node. Its row also says what share of the core stage's
  time in this run that is;
* node: the node in its own process over DDS; batch N is one node serving N cameras that
  publish together (labels and drivable mask subscribed; two frames in flight per camera);
  FLOPs at the network size, as for core.

For every row it prints the latency (p50 per batch; for the node, from publishing a frame to
its labels arriving) and throughput, and the achieved TFLOP/s against a reference: on CUDA
the datasheet peak (a bound: "% of peak"); on the CPU a large matmul measured in the same run,
which is a rate, not a bound (convolutions can beat it), so that column reads "x matmul".
FLOPs per frame are counted from the model (convolutions, at the padded size it computes).
``--compare-nodes N`` also measures N cameras in one node against N single-camera nodes.

Several checkpoints (``--weights a.pt b.pt``) are timed side by side in the same run, one
right after the other for every row, so their ratio holds on a noisy machine; a second table
lists each one's architecture, parameters and FLOPs.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SSNetError
from ..core import options as cli
from ..core.camera_pipeline import CameraPipeline, Frame, Pipeline
from ..core.fileio import check_file_output, write_json
from ..core.ground_grid import (Camera, GridSpec, fuse_lookups, grid_lookup, kitti_camera,
                                sample_grid)
from ..core.preprocessing import normalize
from ..core.segmenter import Segmenter, bf16_is_native, resolve_device, resolve_weights

#: Dense (no sparsity) datasheet peaks in TFLOP/s per precision; fp32 convolutions on CUDA run
#: as TF32 by default (torch.backends.cudnn.allow_tf32), so their row uses the tf32 peak.
#: Matched by substring of torch.cuda.get_device_name(), first match wins.
CUDA_PEAKS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("H200", "H200 SXM", {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H100 NVL", "H100 NVL", {"fp16": 835.0, "bf16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    ("H100 PCIe", "H100 PCIe", {"fp16": 756.5, "bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100", "H100 SXM", {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", "A100", {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", "L40S", {"fp16": 362.1, "bf16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("L4", "L4", {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("A10", "A10", {"fp16": 125.0, "bf16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    ("T4", "T4", {"fp16": 65.0, "fp32": 8.1}),
    ("Orin", "Jetson AGX Orin 64GB GPU (approx.)", {"fp16": 42.5, "bf16": 42.5, "tf32": 21.3,
                                                    "fp32": 5.3}),
)
STAGES = ("model", "core", "grid", "node")
GRID = GridSpec(0.1, (0.0, 40.0), (-20.0, 20.0))
"""The benchmark's drivable grid: 400 x 400 cells."""
NODE_OUTPUTS = ("labels", "drivable_mask")


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-benchmark."""
    p = cli.parser("ssnet-benchmark", __doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", default=[cli.DEFAULT_WEIGHTS_NAME],
                   help="shipped names (ssnet_camvid, fcn8s_camvid) or checkpoint paths; "
                        "several are timed side by side in this run")
    p.add_argument("--sizes", default="375x1242,360x480",
                   help="camera resolutions HxW, comma separated")
    p.add_argument("--batches", default="1,4", help="batch sizes (= cameras for the node)")
    p.add_argument("--precisions", default="",
                   help="comma separated; default fp16,bf16,fp32 on CUDA, fp32,bf16 on the CPU")
    p.add_argument("--stages", default="model,core,grid,node",
                   help=f"any of {', '.join(STAGES)}")
    p.add_argument("--frames", type=int, default=5, help="timed batches per model/core row")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    p.add_argument("--node-frames", type=int, default=0,
                   help="timed frames per camera for node rows; 0: --frames")
    cli.add(p, "--device", "--threads")
    p.add_argument("--compile", action="store_true",
                   help="also time the model under torch.compile (mode max-autotune)")
    p.add_argument("--compare-nodes", type=int, default=0,
                   help="also compare N cameras in one node with N single-camera nodes")
    p.add_argument("--compare-size", default="120x160",
                   help="camera resolution HxW for --compare-nodes")
    p.add_argument("--compare-network", default="",
                   help="network input HxW there (default: the camera resolution)")
    p.add_argument("--compare-frames", type=int, default=12, help="frames per camera there")
    p.add_argument("--compare-cpus", default="",
                   help="pin every node of the comparison to these CPUs (e.g. 0), so both "
                        "set-ups get the same CPU budget")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per node measurement")
    p.add_argument("--out", type=Path, default=None, help="also write the results to this JSON")
    cli.add(p, "--overwrite", "--no-progress")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


parse_size = cli.parse_size
"""'375x1242' (height x width) -> (375, 1242); the shared convention's parser."""


def check_args(args: argparse.Namespace) -> None:
    """Raise SSNetError for bad arguments before any measurement."""
    for text in [s for s in args.sizes.split(",") if s] + [args.compare_size] + (
            [args.compare_network] if args.compare_network else []):
        parse_size(text)
    try:
        batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        raise SSNetError(f"--batches {args.batches!r} is not a comma-separated list of "
                         f"integers") from None
    if not batches or min(batches) < 1:
        raise SSNetError(f"--batches {args.batches!r} must list positive batch sizes")
    unknown = sorted({s for s in args.stages.split(",") if s} - set(STAGES))
    if unknown:
        raise SSNetError(f"unknown stages {unknown}; use {', '.join(STAGES)}")
    if args.frames < 1 or args.warmup < 0:
        raise SSNetError("--frames must be >= 1 and --warmup >= 0")
    if args.out is not None:
        check_file_output(args.out, args.overwrite)


# -- FLOPs and peaks ------------------------------------------------------------------------

def count_flops(model: nn.Module, height: int, width: int) -> int:
    """FLOPs (2 x multiply-accumulates) of one ``height`` x ``width`` frame, counted on a
    meta-device copy of ``model`` with torch.utils.flop_counter (convolutions and matmuls;
    SSNet and FCN-8s compute at the padded size, which is what is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").float().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.zeros((1, 3, height, width), device="meta"))
    return int(counter.get_total_flops())


def cuda_peak(device_name: str, precision: str) -> tuple[float, str] | None:
    """(TFLOP/s, label) of a known CUDA device's dense peak for ``precision`` (fp32 rows use
    TF32 when cuDNN may use it), or None for an unknown device."""
    key = precision
    if precision == "fp32" and torch.backends.cudnn.allow_tf32:
        key = "tf32"
    for pattern, label, peaks in CUDA_PEAKS:
        if pattern.lower() in device_name.lower() and key in peaks:
            return peaks[key], f"{label} {key} dense datasheet peak"
    return None


def measure_cpu_peak(dtype: torch.dtype, seconds: float = 2.0, n: int = 1536) -> float:
    """TFLOP/s of the fastest of repeated n x n matmuls in ``dtype`` on the CPU (the measured
    matmul peak; the fastest one is the least disturbed by other processes)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e12


def peak_for(device: torch.device, precision: str, cache: dict[str, Any]
             ) -> tuple[float, str] | None:
    """The peak a row is compared with (measured once per precision on the CPU)."""
    if device.type == "cuda":
        return cuda_peak(torch.cuda.get_device_name(device), precision)
    if precision not in cache:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        cache[precision] = (measure_cpu_peak(dtype),
                            f"CPU {precision} measured matmul peak "
                            f"({torch.get_num_threads()} threads)")
    return cache[precision]


# -- model and core -------------------------------------------------------------------------

def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, deterministic RGB test frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    channels = [127 + 120 * np.sin(xx / (37 + 9 * c) + yy / (23 + 5 * c) + phase[c])
                for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def _timed(fn: Callable[[], Any], frames: int, warmup: int, sync: Callable[[], None]
           ) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def time_model(seg: Segmenter, images: Sequence[np.ndarray], frames: int, warmup: int,
               compile_model: bool = False) -> list[float]:
    """Seconds per batch of the bare network on a ready batch on the device."""
    batch = torch.from_numpy(np.stack(images)).to(seg.device)
    x = normalize(batch, seg.card.mean, seg.card.std, dtype=seg.dtype,
                  channels_last=seg.channels_last)
    model = seg.model
    if compile_model:  # dynamo's caches are per code object: without a reset, later rows
        torch.compiler.reset()  # pass its recompile limit and run eager, silently
        model = torch.compile(seg.model, mode="max-autotune")
    with torch.inference_mode():
        return _timed(lambda: model(x), frames, warmup, _sync(seg.device))


def time_core(seg: Segmenter, images: Sequence[np.ndarray], frames: int, warmup: int
              ) -> list[float]:
    """Seconds per batch of the frame pipeline (one camera per image, as the node's cameras):
    Segmenter.render_batch, host uint8 in, host outputs out."""
    pipeline = Pipeline(seg)
    batch = [Frame(CameraPipeline(f"camera{i}"), image) for i, image in enumerate(images)]
    return _timed(lambda: pipeline.run(batch, NODE_OUTPUTS), frames, warmup, lambda: None)


def time_grid(seg: Segmenter, images: Sequence[np.ndarray], frames: int, warmup: int
              ) -> list[float]:
    """Seconds per drivable grid (:data:`GRID`) fused from the batch's cameras: KITTI's
    camera level at 1.65 m, scaled to the image size, one camera per image, yawed apart;
    sampled from the numpy masks in host memory, as the node does (on CUDA too)."""
    h, w = images[0].shape[:2]
    masks = [out["drivable_mask"] for out in seg.render_batch(images, ("drivable_mask",))]
    base = kitti_camera(w, h)
    cams = [Camera(base.k, w, h, (0.0, 0.0, 1.65, 0.0, 0.0, 0.6 * (i - (len(images) - 1) / 2)))
            for i in range(len(images))]
    lookups = [grid_lookup(c, GRID) for c in cams]
    lookup = lookups[0] if len(lookups) == 1 else fuse_lookups(lookups)
    return _timed(lambda: sample_grid(lookup, *(m > 0 for m in masks)), frames, warmup,
                  lambda: None)


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# -- through the node -----------------------------------------------------------------------

@dataclass
class RigCamera:
    """One camera of a :class:`CameraRig`: where it publishes and where its outputs appear."""

    image_topic: str
    outputs_namespace: str
    frame_id: str
    sent: dict[int, float] = field(default_factory=dict)
    """In-flight sequence numbers and their publish times."""
    parts: dict[int, set[str]] = field(default_factory=dict)
    answered: list[tuple[int, float, float]] = field(default_factory=list)
    """(sequence, arrival time, latency) of every fully answered frame."""
    lost: int = 0
    """Frames overtaken by a newer one (the node keeps the newest) or lost on the way."""
    last_sent: float = 0.0
    probe_answered: bool = False


@dataclass
class RigResult:
    """Throughput and latency of one :meth:`CameraRig.run`."""

    frames: int
    seconds: float
    fps: float
    latency_ms: list[float]
    per_camera: list[int]
    lost: int
    headers_ok: bool


class CameraRig:
    """Publishes frames for several cameras and collects the ssnet node outputs per camera.

    Frame k of camera i is stamped (i + 1 s, k ns) with the camera's frame_id; an output counts
    for a frame only when its header is that frame's header. :attr:`wrong_headers` counts
    outputs whose header belongs to no frame sent on that camera.
    """

    def __init__(self, context: Any, cameras: Sequence[tuple[str, str, str]], *,
                 outputs: Sequence[str] = ("labels",), name: str = "ssnet_rig") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from ..ros.node import INPUT_QOS, OUTPUTS

        self.node = Node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.cameras = [RigCamera(*cam) for cam in cameras]
        self.outputs = tuple(outputs)
        self.wrong_headers = 0
        self.statuses: dict[str, dict[str, str]] = {}
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)
        self.publishers = [self.node.create_publisher(Image, cam.image_topic, INPUT_QOS)
                           for cam in self.cameras]
        self.subscriptions = [
            self.node.create_subscription(
                Image, f"{cam.outputs_namespace.rstrip('/')}/{OUTPUTS[key]}",
                lambda msg, i=i, key=key: self._on_output(i, key, msg), qos)
            for i, cam in enumerate(self.cameras) for key in self.outputs]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_output(self, index: int, key: str, msg: Any) -> None:
        from ..ros.client import PROBE_FRAME

        cam, now = self.cameras[index], time.perf_counter()
        header = msg.header
        if header.frame_id == PROBE_FRAME:
            cam.probe_answered = True
            return
        seq = header.stamp.nanosec
        if header.frame_id != cam.frame_id or header.stamp.sec != index + 1 \
                or seq not in cam.sent:
            if header.frame_id != cam.frame_id or header.stamp.sec != index + 1:
                self.wrong_headers += 1
            return
        parts = cam.parts.setdefault(seq, set())
        parts.add(key)
        if len(parts) == len(self.outputs):
            sent = cam.sent.pop(seq)
            del cam.parts[seq]
            cam.answered.append((seq, now, now - sent))
            for older in [s for s in cam.sent if s < seq]:  # skipped or lost on the way
                cam.sent.pop(older)
                cam.parts.pop(older, None)
                cam.lost += 1

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            self.statuses[status.name] = {kv.key: kv.value for kv in status.values}

    def spin_until(self, condition: Callable[[], bool], timeout: float,
                   procs: Sequence[Any] = ()) -> bool:
        """Spin until ``condition()`` (True), ``timeout`` s pass or a process exits."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                return condition()
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def wait_ready(self, timeout: float, procs: Sequence[Any] = ()) -> bool:
        """Discovery both ways, then a probe frame answered on every camera."""
        from ..ros.client import PROBE_FRAME, image_msg

        deadline = time.monotonic() + timeout
        if not self.spin_until(lambda: all(p.get_subscription_count() > 0
                                           for p in self.publishers)
                               and all(s.get_publisher_count() > 0
                                       for s in self.subscriptions), timeout, procs):
            return False
        probe = np.zeros((64, 64, 3), np.uint8)
        wait = 1.0
        while time.monotonic() < deadline:
            for i, cam in enumerate(self.cameras):
                if not cam.probe_answered:
                    self.publishers[i].publish(image_msg(probe, 0, PROBE_FRAME))
            if self.spin_until(lambda: all(c.probe_answered for c in self.cameras),
                               min(wait, max(0.0, deadline - time.monotonic())), procs):
                return True
            if any(p.poll() is not None for p in procs):
                return False
            wait = min(2 * wait, 30.0)
        return False

    def run(self, images: Sequence[np.ndarray], frames: int, *, warmup: int = 1,
            window: int = 2, timeout: float = 600.0, procs: Sequence[Any] = (),
            stall: float = 60.0, stagger: float = 0.005) -> RigResult:
        """Each camera keeps ``window`` frames in flight until ``warmup + frames`` of its frames
        are answered; throughput counts the answers after every camera's warm-up.

        A camera's frames go out at least ``stagger`` s apart, so that the node's worker has
        taken one before the next arrives (back to back, the newer would replace it)."""
        from ..ros.client import image_msg

        msgs = [image_msg(images[i % len(images)], 0, cam.frame_id)
                for i, cam in enumerate(self.cameras)]
        total = warmup + frames
        for cam in self.cameras:
            cam.sent.clear()
            cam.parts.clear()
            cam.answered.clear()
            cam.lost = 0
        seq = 0
        deadline = time.monotonic() + timeout
        last_answers, last_progress = 0, time.monotonic()
        while any(len(cam.answered) < total for cam in self.cameras):
            answers = sum(len(cam.answered) for cam in self.cameras)
            if answers != last_answers:
                last_answers, last_progress = answers, time.monotonic()
            elif time.monotonic() - last_progress > stall:  # every frame in flight was lost
                for cam in self.cameras:
                    cam.lost += len(cam.sent)
                    cam.sent.clear()
                    cam.parts.clear()
                last_progress = time.monotonic()
            for i, cam in enumerate(self.cameras):
                now = time.perf_counter()
                if len(cam.sent) < window and len(cam.answered) + len(cam.sent) < total \
                        and (not cam.sent or now - cam.last_sent >= stagger):
                    seq += 1
                    msg = msgs[i]
                    msg.header.stamp.sec, msg.header.stamp.nanosec = i + 1, seq
                    cam.sent[seq] = cam.last_sent = now
                    self.publishers[i].publish(msg)
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                done = [len(c.answered) for c in self.cameras]
                raise SSNetError(f"cameras answered {done} of {total} frames each in time")
            self.executor.spin_once(timeout_sec=0.002)
        start = max(cam.answered[warmup - 1][1] if warmup else cam.answered[0][1]
                    for cam in self.cameras)
        timed = [a for cam in self.cameras for a in cam.answered if a[1] > start]
        end = max(a[1] for cam in self.cameras for a in cam.answered)
        seconds = max(end - start, 1e-9)
        return RigResult(frames=len(timed), seconds=seconds, fps=len(timed) / seconds,
                         latency_ms=[1000 * a[2] for a in timed],
                         per_camera=[len(c.answered) for c in self.cameras],
                         lost=sum(c.lost for c in self.cameras),
                         headers_ok=self.wrong_headers == 0)

    def close(self) -> None:
        """Destroy the rig's node."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def node_env(threads: int) -> dict[str, str]:
    """The environment for node processes (OMP_NUM_THREADS when ``threads``)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def multi_camera_topics(names: Sequence[str], namespace: str = "") -> list[tuple[str, str, str]]:
    """Rig cameras for one node serving ``names`` in ``namespace``."""
    ns = namespace.rstrip("/")
    return [(f"{ns}/{n}/image", f"{ns}/{n}", n) for n in names]


def single_node_topics(namespaces: Sequence[str]) -> list[tuple[str, str, str]]:
    """Rig cameras for single-camera nodes, one per namespace."""
    return [(f"{ns}/image", ns, ns.strip("/").replace("/", "_")) for ns in namespaces]


def _ros_context() -> Any:
    import rclpy

    from ..ros.client import use_large_image_profile

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    use_large_image_profile()
    context = rclpy.Context()
    rclpy.init(context=context)
    return context


def pin_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A Popen preexec_fn restricting the child to ``cpus`` (None: no restriction)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def run_nodes(context: Any, params: dict[str, Any], layouts: Sequence[tuple[str, list[str]]],
              rig_cameras: Sequence[tuple[str, str, str]], images: Sequence[np.ndarray],
              frames: int, *, threads: int, timeout: float, warmup: int = 1,
              name: str = "ssnet_rig", cpus: set[int] | None = None) -> RigResult:
    """Start one node per (namespace, cameras) layout (on ``cpus`` if given), drive them with a
    rig, stop them."""
    from ..ros.client import start_node, stop_node

    procs = [start_node({**params, **({"cameras": cams} if cams else {})},
                        {"__ns": ns} if ns else None, env=node_env(threads),
                        preexec_fn=pin_to(cpus))
             for ns, cams in layouts]
    rig = CameraRig(context, rig_cameras, outputs=NODE_OUTPUTS, name=name)
    try:
        if not rig.wait_ready(timeout, procs):
            for proc in procs:
                stop_node(proc)
            logs = [proc.stdout.read()[-2000:] if proc.stdout else "" for proc in procs]
            raise SSNetError("the node did not answer:\n" + "\n".join(logs))
        return rig.run(images, frames, warmup=warmup, timeout=timeout, procs=procs)
    finally:
        rig.close()
        for proc in procs:
            stop_node(proc)


# -- the table ------------------------------------------------------------------------------

@dataclass
class Row:
    """One measurement."""

    stage: str
    size: tuple[int, int]
    batch: int
    precision: str
    latency_ms: float
    fps: float
    tflops: float
    peak: float | None
    peak_label: str
    note: str = ""
    model: str = ""

    def cells(self) -> list[str]:
        """Markdown table cells."""
        h, w = self.size
        if not self.peak:
            share = "n/a"
        elif "measured" in self.peak_label:  # a rate, not a bound
            share = f"{self.tflops / self.peak:.2f}x matmul"
        else:
            share = f"{100 * self.tflops / self.peak:.2f}% of peak"
        return [self.model, self.stage, f"{h}x{w}", str(self.batch), self.precision,
                f"{self.latency_ms:.1f}", f"{self.fps:.3f}", f"{self.tflops:.4f}",
                f"{self.peak:.2f}" if self.peak else "n/a", share]


HEADER = ["weights", "stage", "camera HxW", "batch", "precision", "latency p50 ms", "frames/s",
          "TFLOP/s", "reference TFLOP/s", "vs reference"]


def markdown(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def _row(stage: str, size: tuple[int, int], batch: int, precision: str,
         seconds_per_batch: list[float], flops: int, peak: tuple[float, str] | None,
         note: str = "", model: str = "") -> Row:
    p50 = statistics.median(seconds_per_batch)
    fps = batch / p50
    return Row(stage, size, batch, precision, 1000 * p50, fps, fps * flops / 1e12,
               peak[0] if peak else None, peak[1] if peak else "", note, model)


def weights_labels(paths: Sequence[str]) -> list[str]:
    """Short names for the table: file stems, or whole paths where two stems clash."""
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def models_table(models: dict[str, dict[str, Any]]) -> str:
    """One row per checkpoint: architecture, classes, parameters, FLOPs per frame."""
    sizes = sorted({s for m in models.values() for s in m["flops_per_frame"]})
    head = ["weights", "architecture", "classes", "parameters"] + [f"GFLOP at {s}"
                                                                   for s in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, m in models.items():
        cells = [label, m["architecture"], str(m["classes"]), f"{m['parameters'] / 1e6:.2f} M"]
        cells += [f"{m['flops_per_frame'][s] / 1e9:.1f}" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_precisions(device: torch.device) -> list[str]:
    """fp16, bf16, fp32 on CUDA (bf16 only from Ampere on, where it is native); fp32, bf16
    on the CPU."""
    if device.type == "cuda":
        return ["fp16", "bf16", "fp32"] if bf16_is_native(device) else ["fp16", "fp32"]
    return ["fp32", "bf16"]


def network_flops(seg: Segmenter, size: tuple[int, int], camera_flops: int) -> int:
    """FLOPs per frame at the size the network runs at for a ``size`` frame (the rule's)."""
    net = seg.network_size(*size)
    return camera_flops if net is None or tuple(net) == tuple(size) else \
        count_flops(seg.model, *net)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every row, plus the multi-camera comparison when asked for."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    batches = [int(b) for b in args.batches.split(",") if b]
    precisions = [p for p in args.precisions.split(",") if p] or default_precisions(device)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SSNetError(f"unknown stages {unknown}; use {', '.join(STAGES)}")
    rows: list[Row] = []
    peaks: dict[str, Any] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(sizes) * len(precisions) * len(batches), desc="benchmark",
               unit="setting", disable=not getattr(args, "progress", True), file=sys.stderr)
    context = _ros_context() if "node" in stages or args.compare_nodes else None
    labels = weights_labels(args.weights)
    models: dict[str, dict[str, Any]] = {}
    for size in sizes:
        key = cli.format_size(*size)
        images = [scene(*size, seed) for seed in range(max(batches))]
        for precision in precisions:
            segs = [Segmenter(w, device=str(device), precision=precision) for w in args.weights]
            flops = [count_flops(seg.model, *size) for seg in segs]
            for label, path, seg, f in zip(labels, args.weights, segs, flops):
                info = models.setdefault(label, {
                    "weights": str(path), "architecture": seg.card.model,
                    "classes": seg.card.num_classes, "flops_per_frame": {},
                    "parameters": sum(p.numel() for p in seg.model.parameters())})
                info["flops_per_frame"][key] = f
            peak = peak_for(device, precision, peaks)
            for batch in batches:
                frames, before = images[:batch], len(rows)
                for stage in [s for s in STAGES if s in stages]:
                    for label, path, seg, f in zip(labels, args.weights, segs, flops):
                        rows += stage_rows(args, context, stage, seg, str(path), label, size,
                                           batch, precision, frames, f, peak)
                for row in rows[before:]:
                    bar.write(f"{row.model} {row.stage} {row.size[0]}x{row.size[1]} batch "
                              f"{row.batch} {row.precision}: {row.latency_ms:.1f} ms, "
                              f"{row.fps:.2f} frames/s", file=sys.stderr)
                bar.update(1)
            del segs
    bar.close()
    result: dict[str, Any] = {
        "grid": grid_shares(rows),
        "weights": [str(w) for w in args.weights], "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else _cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "models": models, "rows": [vars(r) for r in rows],
        "peaks": {k: list(v) for k, v in peaks.items()}, "table": markdown(rows),
        "models_table": models_table(models),
    }
    if args.compare_nodes:
        result["compare_nodes"] = compare_nodes(args, context, device)
    if context is not None:
        import rclpy

        rclpy.try_shutdown(context=context)
    return result


def grid_shares(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Each grid row's time against the core row of the same setting, measured in this run."""
    core = {(r.model, r.size, r.batch, r.precision): r for r in rows if r.stage == "core"}
    out = []
    for r in rows:
        if r.stage != "grid":
            continue
        c = core.get((r.model, r.size, r.batch, r.precision))
        out.append({"model": r.model, "size": list(r.size), "batch": r.batch,
                    "precision": r.precision, "cells": r.note, "grid_ms": r.latency_ms,
                    "core_ms": c.latency_ms if c else None,
                    "share_of_core": r.latency_ms / c.latency_ms if c else None})
    return out


def stage_rows(args: argparse.Namespace, context: Any, stage: str, seg: Segmenter,
               weights: str, label: str, size: tuple[int, int], batch: int, precision: str,
               frames: Sequence[np.ndarray], flops: int, peak: tuple[float, str] | None
               ) -> list[Row]:
    """The rows of one stage for one checkpoint."""
    if stage == "model":
        rows = [_row("model", size, batch, precision,
                     time_model(seg, frames, args.frames, args.warmup), flops, peak,
                     model=label)]
        if args.compile:
            rows.append(_row("model+compile", size, batch, precision,
                             time_model(seg, frames, args.frames, max(args.warmup, 2), True),
                             flops, peak, model=label))
        return rows
    if stage == "core":
        net = seg.network_size(*size) or size
        return [_row("core", size, batch, precision,
                     time_core(seg, frames, args.frames, args.warmup),
                     network_flops(seg, size, flops), peak,
                     note=f"network {net[0]}x{net[1]}", model=label)]
    if stage == "grid":
        return [_row("grid", size, batch, precision,
                     time_grid(seg, frames, max(args.frames, 20), args.warmup), 0, None,
                     note=f"{GRID.width}x{GRID.height} cells", model=label)]
    return [node_row(args, context, weights, label, size, batch, precision, frames,
                     network_flops(seg, size, flops), peak)]


def node_row(args: argparse.Namespace, context: Any, weights: str, label: str,
             size: tuple[int, int], batch: int, precision: str, images: Sequence[np.ndarray],
             flops: int, peak: tuple[float, str] | None) -> Row:
    """Batch 1: a single-camera node; batch N: one node serving N cameras."""
    params = {"weights": weights, "device": args.device, "precision": precision}
    ns = f"/ssnet_bench_{os.getpid()}"
    if batch == 1:
        layouts, cams = [(ns, [])], single_node_topics([ns])
    else:
        names = [f"cam{i}" for i in range(batch)]
        layouts, cams = [(ns, names)], multi_camera_topics(names, ns)
    frames = args.node_frames or args.frames
    result = run_nodes(context, params, layouts, cams, images, frames, threads=args.threads,
                       timeout=args.timeout, name=f"rig_{batch}_{precision}")
    p50 = statistics.median(result.latency_ms) if result.latency_ms else float("nan")
    return Row("node", size, batch, precision, p50, result.fps, result.fps * flops / 1e12,
               peak[0] if peak else None, peak[1] if peak else "",
               note=f"{result.frames} frames, {result.lost} lost", model=label)


def compare_nodes(args: argparse.Namespace, context: Any, device: torch.device
                  ) -> dict[str, Any]:
    """N cameras in one node vs N single-camera nodes: same frames, size and precision."""
    n = args.compare_nodes
    size = parse_size(args.compare_size)
    images = [scene(*size, seed) for seed in range(n)]
    params: dict[str, Any] = {"weights": str(args.weights[0]), "device": args.device}
    if args.compare_network:
        h, w = parse_size(args.compare_network)
        params.update(input_height=h, input_width=w)
    cpus = {int(c) for c in args.compare_cpus.split(",") if c} or None
    pid = os.getpid()
    names = [f"cam{i}" for i in range(n)]
    namespaces = [f"/ssnet_sep{pid}_{i}" for i in range(n)]
    one = run_nodes(context, params, [(f"/ssnet_one{pid}", names)],
                    multi_camera_topics(names, f"/ssnet_one{pid}"), images,
                    args.compare_frames, threads=args.threads, timeout=args.timeout,
                    name="rig_one", cpus=cpus)
    separate = run_nodes(context, params, [(ns, []) for ns in namespaces],
                         single_node_topics(namespaces), images, args.compare_frames,
                         threads=args.threads, timeout=args.timeout, name="rig_separate",
                         cpus=cpus)
    return {"cameras": n, "camera_size": list(size),
            "network_input": args.compare_network or "camera size",
            "cpus": sorted(cpus) if cpus else "any", "frames_per_camera":
            args.compare_frames, "one_node_fps": one.fps, "separate_nodes_fps": separate.fps,
            "ratio": one.fps / separate.fps,
            "one_node_latency_p50_ms": statistics.median(one.latency_ms),
            "separate_latency_p50_ms": statistics.median(separate.latency_ms)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


@cli.entry_point("ssnet-benchmark", interrupted="nothing written")
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    args.progress = not args.no_progress
    check_args(args)
    args.weights = [resolve_weights(w) for w in args.weights]
    for weights in args.weights:
        if not weights.is_file():
            raise SSNetError(f"weights file {weights} does not exist")
    result = run(args)
    print()
    print(f"device: {result['device']} ({result['device_name']}), torch {result['torch']}, "
          f"{result['threads']} CPU threads")
    for label, info in result["models"].items():
        for size, flops in info["flops_per_frame"].items():
            h, w = parse_size(size)
            print(f"{label} FLOPs per {size} frame: {flops / 1e12:.4f} TFLOP "
                  f"({flops / 2 / (h * w) / 1e3:.1f} kMAC per camera pixel)")
    for precision, (value, label) in result["peaks"].items():
        print(f"peak {precision}: {value:.3f} TFLOP/s ({label})")
    for g in result["grid"]:
        share = f", {100 * g['share_of_core']:.3g}% of the core stage's {g['core_ms']:.1f} ms" \
            if g["share_of_core"] is not None else ""
        print(f"drivable grid {g['cells']} from {g['batch']} camera(s) "
              f"{g['size'][0]}x{g['size'][1]} ({g['precision']}): {g['grid_ms']:.3f} ms per "
              f"grid on {result['device']}{share}")
    if "compare_nodes" in result:
        c = result["compare_nodes"]
        print(f"{c['cameras']} cameras {c['camera_size'][0]}x{c['camera_size'][1]} (network "
              f"input {c['network_input']}, CPUs {c['cpus']}), {c['frames_per_camera']} frames "
              f"each: one node "
              f"{c['one_node_fps']:.2f} "
              f"frames/s, {c['cameras']} nodes {c['separate_nodes_fps']:.2f} frames/s "
              f"(ratio {c['ratio']:.2f})")
    print()
    print(result["table"])
    print()
    print(result["models_table"])
    if args.out is not None:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
