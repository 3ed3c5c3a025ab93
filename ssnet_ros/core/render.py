"""Message-ready outputs of a batch of frames: labels, drivable mask, confidence, colour, overlay.

Two implementations of one contract (:data:`OUTPUT_KEYS`, all HxW or HxWx3 uint8 per frame):

* :func:`render_numpy` on the host (the CPU path: numpy lookups are the fastest there);
* :func:`render_packed` on the model's device: normalisation, resize, network, argmax,
  drivable lookup, palette colouring and overlay in torch, packed into one N x K uint8 tensor
  so that a single copy brings every output back (:func:`unpack` splits it without copying).
  :class:`GraphCache` replays it as CUDA graphs captured per (batch, height, width, network
  size, outputs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from ..errors import SSNetError
from .drivable import apply_floor, fallback_labels
from .preprocessing import normalize, resize_frames, resize_nearest
from .visualize import confidence_to_mono8, mask_to_mono8, overlay

#: Output names in packing order, as in the node's publish_* switches.
OUTPUT_KEYS = ("labels", "drivable_mask", "confidence", "color", "overlay")
#: Each output's topic, relative to the node's namespace (ssnet-eval-bag's --namespace).
OUTPUT_TOPICS = {key: f"segmentation/{key}" for key in OUTPUT_KEYS}
GRID_TOPIC = "segmentation/drivable_grid"
"""nav_msgs/OccupancyGrid of the drivable mask on the ground (one, fused, for all cameras)."""
TRUST_TOPIC = "segmentation/drivable_trust"
"""Per-frame drivable trust (sensor_msgs/RelativeHumidity: a stamped 0..1 value)."""
#: Packing order on the device: the outputs, then the fallback labels (the most likely class
#: that is not drivable; internal, for the connected pass on the host).
PACK_ORDER = OUTPUT_KEYS + ("fallback",)
#: Bytes per pixel of each output (mono8 or rgb8).
CHANNELS = {"labels": 1, "drivable_mask": 1, "confidence": 1, "color": 3, "overlay": 3,
            "fallback": 1}
#: Largest number of CUDA graphs kept per Segmenter (least recently used ones are freed).
#: They share one memory pool, so each costs its static input and output, not activations.
MAX_GRAPHS = 16

#: The packed-output key of the frame's trust features (float32 bytes, not an image).
TRUST_KEY = "trust"

Rendered = dict[str, np.ndarray]
GraphKey = tuple[int, int, int, tuple[int, int] | None, tuple[str, ...]]


def check_outputs(outputs: Collection[str]) -> tuple[str, ...]:
    """``outputs`` in packing order; unknown names raise SSNetError."""
    unknown = sorted(set(outputs) - set(OUTPUT_KEYS))
    if unknown:
        raise SSNetError(f"unknown outputs {unknown} (known: {', '.join(OUTPUT_KEYS)})")
    return tuple(key for key in OUTPUT_KEYS if key in outputs)


def render_numpy(images: Sequence[np.ndarray], labels: np.ndarray, drivable: np.ndarray,
                 confidence: np.ndarray | None, outputs: tuple[str, ...],
                 palette: np.ndarray, alpha: float) -> list[Rendered]:
    """Per-frame outputs from the Segmenter's numpy results (``palette``: 256x3 uint8)."""
    frames = []
    for i, image in enumerate(images):
        out: Rendered = {}
        if "labels" in outputs:
            out["labels"] = labels[i]
        if "drivable_mask" in outputs:
            out["drivable_mask"] = mask_to_mono8(drivable[i])
        if "confidence" in outputs:
            assert confidence is not None
            out["confidence"] = confidence_to_mono8(confidence[i])
        if "color" in outputs or "overlay" in outputs:
            color = np.take(palette, labels[i], axis=0)
            if "color" in outputs:
                out["color"] = color
            if "overlay" in outputs:
                out["overlay"] = overlay(image, color, alpha)
        frames.append(out)
    return frames


class DeviceTables:
    """What :func:`render_packed` needs on the device: normalisation, lookup tables, alpha."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], palette: np.ndarray,
                 drivable_ids: Sequence[int], device: torch.device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.palette = torch.from_numpy(palette).to(device)
        mask = torch.zeros(256, dtype=torch.uint8)
        mask[list(drivable_ids)] = 255
        self.mask = mask.to(device)
        self.lut = self.mask > 0
        """256 bools by class id: drivable."""
        self.floor = torch.zeros((), dtype=torch.float32, device=device)
        """The drivable confidence floor; a tensor so a captured graph reads its value."""
        self.alpha = torch.zeros((), dtype=torch.int32, device=device)
        """Overlay weight 0..256; a tensor so a captured graph reads its current value."""


def render_packed(model: torch.nn.Module, batch: torch.Tensor, outputs: tuple[str, ...],
                  tables: DeviceTables, *, dtype: torch.dtype, channels_last: bool,
                  input_size: tuple[int, int] | None, floor: bool = False) -> torch.Tensor:
    """NHWC uint8 batch on the device -> N x K uint8: the outputs of each frame, flattened
    and concatenated in ``outputs`` order (no host synchronisation: capturable).

    ``floor``: apply the drivable confidence floor ``tables.floor``
    (:func:`ssnet_ros.core.drivable.apply_floor`, at the network's resolution, which the
    nearest resize to the image's size leaves exactly as on the host). ``outputs`` may name
    ``fallback`` (:data:`PACK_ORDER`)."""
    n, h, w = batch.shape[:3]
    x = normalize(resize_frames(batch, input_size), tables.mean, tables.std, dtype=dtype,
                  channels_last=channels_last)
    logits = model(x)
    net_labels = logits.argmax(dim=1).to(torch.uint8)
    top = None
    if floor or "confidence" in outputs:
        top = torch.softmax(logits.float(), dim=1).amax(dim=1)
    if floor or "fallback" in outputs:
        fallback = fallback_labels(logits, tables.lut[:logits.shape[1]]).to(torch.uint8)
    if floor:
        net_labels = apply_floor(net_labels, top, fallback, tables.lut, tables.floor)
    labels = resize_nearest(net_labels, (h, w))
    index = labels.long()
    parts = []
    if TRUST_KEY in outputs:  # float32 features as their bytes: one copy brings all back
        from .trust import trust_features

        parts.append(trust_features(logits, tables.lut).contiguous().view(torch.uint8))
    for key in outputs:
        if key == "labels":
            parts.append(labels)
        elif key == "drivable_mask":
            parts.append(tables.mask[index])
        elif key == "fallback":
            parts.append(resize_nearest(fallback, (h, w)))
        elif key == "confidence":
            conf = resize_nearest(top, (h, w))
            parts.append((conf * 255.0 + 0.5).clamp_(0.0, 255.0).to(torch.uint8))
        elif key == "color":
            parts.append(tables.palette[index])
        elif key == "overlay":
            blend = batch.int() * (256 - tables.alpha) + tables.palette[index].int() * tables.alpha
            parts.append(((blend + 128) >> 8).to(torch.uint8))
    return torch.cat([p.reshape(n, -1) for p in parts], dim=1)


def unpack(packed: np.ndarray, height: int, width: int,
           outputs: tuple[str, ...], trust_features: int = 0) -> list[Rendered]:
    """Split an N x K array from :func:`render_packed` into per-frame views (no copies);
    with :data:`TRUST_KEY`, ``trust_features`` float32 values come first."""
    frames = []
    for row in packed:
        out: Rendered = {}
        offset = 0
        if TRUST_KEY in outputs:
            offset = 4 * trust_features
            out[TRUST_KEY] = row[:offset].copy().view(np.float32)
        for key in outputs:
            if key == TRUST_KEY:
                continue
            size = height * width * CHANNELS[key]
            shape = (height, width) if CHANNELS[key] == 1 else (height, width, 3)
            out[key] = row[offset:offset + size].reshape(shape)
            offset += size
        frames.append(out)
    return frames


def root_cause(exc: BaseException) -> BaseException:
    """The first error of a chain: a graph context's exit can raise again while handling the
    capture's own error, and that second error says nothing of the first."""
    seen = {id(exc)}
    while exc.__context__ is not None and id(exc.__context__) not in seen:
        exc = exc.__context__
        seen.add(id(exc))
    return exc


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device (or host) out-of-memory error anywhere in ``exc``'s chain."""
    cause = root_cause(exc)
    return any(isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e)
               for e in (exc, cause))


def on_device(device: torch.device) -> AbstractContextManager[Any]:
    """Make ``device`` the current CUDA device (streams, graphs, the caching allocator and
    ``synchronize`` act on the current device, which is cuda:0 unless set); a no-op on the
    CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


Replay = Callable[[], Any]
Render = Callable[[torch.Tensor, tuple[str, ...], tuple[int, int] | None], torch.Tensor]


class GraphCache:
    """Replays of ``render`` captured per key, with their static input and output tensors.

    The key is (batch, height, width, network input size, outputs): everything that changes
    the captured work, and nothing else. A key's first use warms ``render`` up on the cache's
    side stream (cuDNN picks its algorithms) and captures it; later uses copy the input into
    the static input tensor and replay. On CUDA all graphs share one memory pool (their
    intermediate activations are never alive at once: replays run one at a time on one
    stream) and one capture stream, on ``device`` made current. At most ``size`` graphs are
    kept: the least recently used one is freed after a new capture succeeded, never before.

    A capture that runs out of memory leaves the cache as it was and its key runs eager
    (``run`` returns None); any other capture error (an op that cannot be captured) turns the
    cache off (:attr:`enabled` False, :attr:`error` says why, naming the first error).

    Off CUDA, ``capture`` defaults to :func:`capture_eager`, the same contract without graphs:
    the CPU tests run this class as the GPU does.
    """

    def __init__(self, render: Render, device: torch.device, size: int = MAX_GRAPHS,
                 capture: Callable[..., tuple[Replay, torch.Tensor]] | None = None) -> None:
        self.render, self.device, self.size = render, device, size
        self._capture_fn = capture or (self._capture_cuda if device.type == "cuda"
                                       else capture_eager)
        self._graphs: OrderedDict[GraphKey, tuple[Replay, torch.Tensor, torch.Tensor]] = \
            OrderedDict()
        self._eager: set[GraphKey] = set()
        self._pool: Any = None
        self._stream: Any = None
        self.captures = 0
        """Successful captures so far."""
        self.enabled = True
        """False once a capture failed for a reason other than memory."""
        self.error: str | None = None
        """The last capture error (the first of its chain), None if none failed."""

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, key: GraphKey) -> bool:
        return key in self._graphs

    @staticmethod
    def key(batch: torch.Tensor, outputs: tuple[str, ...],
            net: tuple[int, int] | None) -> GraphKey:
        """What a capture depends on: batch size, image size, network size, outputs."""
        n, h, w = (int(v) for v in batch.shape[:3])
        return (n, h, w, None if net is None else (int(net[0]), int(net[1])), outputs)

    def run(self, batch: torch.Tensor, outputs: tuple[str, ...],
            net: tuple[int, int] | None) -> torch.Tensor | None:
        """``render(batch, outputs, net)`` by replay; ``batch`` may be pinned host memory.
        None: run it eagerly (this key's capture ran out of memory, or the cache is off)."""
        key = self.key(batch, outputs, net)
        if not self.enabled or key in self._eager:
            return None
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key)
            if entry is None:
                return None
        else:
            self._graphs.move_to_end(key)
        replay, static_in, static_out = entry
        static_in.copy_(batch, non_blocking=True)
        replay()
        return static_out

    def _capture(self, key: GraphKey) -> tuple[Replay, torch.Tensor, torch.Tensor] | None:
        n, h, w, net, outputs = key
        static_in = torch.zeros((n, h, w, 3), dtype=torch.uint8, device=self.device)
        try:
            replay, static_out = self._capture_fn(self.render, static_in, outputs, net)
        except RuntimeError as exc:
            cause = root_cause(exc)
            self.error = f"{type(cause).__name__}: {cause}"
            if is_out_of_memory(exc):
                self._eager.add(key)
            else:
                self.enabled = False
                self._graphs.clear()
            return None
        self._graphs[key] = (replay, static_in, static_out)
        self.captures += 1
        while len(self._graphs) > self.size:
            self._graphs.popitem(last=False)
        return self._graphs[key]

    def _capture_cuda(self, render: Render, static_in: torch.Tensor, outputs: tuple[str, ...],
                      net: tuple[int, int] | None) -> tuple[Replay, torch.Tensor]:
        with on_device(self.device):
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.device)
                self._pool = torch.cuda.graph_pool_handle()
            side = self._stream
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    render(static_in, outputs, net)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, stream=side,
                                  capture_error_mode="thread_local"):
                static_out = render(static_in, outputs, net)
        return graph.replay, static_out


def capture_eager(render: Render, static_in: torch.Tensor, outputs: tuple[str, ...],
                  net: tuple[int, int] | None) -> tuple[Replay, torch.Tensor]:
    """:class:`GraphCache`'s capture contract without CUDA graphs: the static output is
    filled by running ``render`` on the static input at each replay."""
    static_out = render(static_in, outputs, net)

    def replay() -> None:
        static_out.copy_(render(static_in, outputs, net))

    return replay, static_out


class HostBuffers:
    """Reusable host staging tensors by shape (pinned for CUDA copies), the ``size`` most
    recently used kept: pinned memory does not grow with each new image size, and no
    pinned allocation (slow, synchronising) is made per frame."""

    def __init__(self, pin: bool, size: int = 4) -> None:
        self.pin, self.size = pin, size
        self._buffers: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buffers)

    def get(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A uint8 tensor of ``shape``; the same one as last time for the same shape."""
        buffer = self._buffers.get(shape)
        if buffer is None:
            buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
            self._buffers[shape] = buffer
            while len(self._buffers) > self.size:
                self._buffers.popitem(last=False)
        else:
            self._buffers.move_to_end(shape)
        return buffer
