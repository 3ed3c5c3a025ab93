"""Message-ready outputs of a batch of frames: labels, drivable mask, confidence, colour, overlay.

Two implementations of one contract (:data:`OUTPUT_KEYS`, all HxW or HxWx3 uint8 per frame):

* :func:`render_numpy` on the host (the CPU path: numpy lookups are the fastest there);
* :func:`render_packed` on the model's device: normalisation, resize, network, argmax,
  drivable lookup, palette colouring and overlay in torch, packed into one N x K uint8 tensor
  so that a single copy brings every output back (:func:`unpack` splits it without copying).
  :class:`GraphCache` replays it as CUDA graphs captured per (batch, height, width, outputs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence

import numpy as np
import torch

from ..errors import SSNetError
from .preprocessing import normalize, resize_input, resize_nearest
from .visualize import confidence_to_mono8, mask_to_mono8, overlay

#: Output names in packing order, as in the node's publish_* switches.
OUTPUT_KEYS = ("labels", "drivable_mask", "confidence", "color", "overlay")
#: Bytes per pixel of each output (mono8 or rgb8).
CHANNELS = {"labels": 1, "drivable_mask": 1, "confidence": 1, "color": 3, "overlay": 3}
#: Largest number of CUDA graphs kept per Segmenter (least recently used ones are freed).
MAX_GRAPHS = 8

Rendered = dict[str, np.ndarray]
GraphKey = tuple[int, int, int, tuple[str, ...], object]


def check_outputs(outputs: Collection[str]) -> tuple[str, ...]:
    """``outputs`` in packing order; unknown names raise SSNetError."""
    unknown = sorted(set(outputs) - set(OUTPUT_KEYS))
    if unknown:
        raise SSNetError(f"unknown outputs {unknown} (known: {', '.join(OUTPUT_KEYS)})")
    return tuple(key for key in OUTPUT_KEYS if key in outputs)


def alpha_weight(alpha: float) -> int:
    """Overlay weight in 1/256 steps, as :func:`ssnet_ros.core.visualize.overlay` rounds it."""
    if not 0.0 <= alpha <= 1.0:
        raise SSNetError(f"overlay alpha {alpha} is outside 0..1")
    return int(round(alpha * 256))


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
        self.alpha = torch.zeros((), dtype=torch.int32, device=device)
        """Overlay weight 0..256; a tensor so a captured graph reads its current value."""


def render_packed(model: torch.nn.Module, batch: torch.Tensor, outputs: tuple[str, ...],
                  tables: DeviceTables, *, dtype: torch.dtype, channels_last: bool,
                  input_size: tuple[int, int] | None) -> torch.Tensor:
    """NHWC uint8 batch on the device -> N x K uint8: the outputs of each frame, flattened
    and concatenated in ``outputs`` order (no host synchronisation: capturable)."""
    n, h, w = batch.shape[:3]
    x = normalize(batch, tables.mean, tables.std, dtype=dtype, channels_last=channels_last)
    logits = model(resize_input(x, input_size))
    labels = resize_nearest(logits.argmax(dim=1).to(torch.uint8), (h, w))
    index = labels.long()
    parts = []
    for key in outputs:
        if key == "labels":
            parts.append(labels)
        elif key == "drivable_mask":
            parts.append(tables.mask[index])
        elif key == "confidence":
            conf = resize_nearest(torch.softmax(logits.float(), dim=1).amax(dim=1), (h, w))
            parts.append((conf * 255.0 + 0.5).clamp_(0.0, 255.0).to(torch.uint8))
        elif key == "color":
            parts.append(tables.palette[index])
        elif key == "overlay":
            blend = batch.int() * (256 - tables.alpha) + tables.palette[index].int() * tables.alpha
            parts.append(((blend + 128) >> 8).to(torch.uint8))
    return torch.cat([p.reshape(n, -1) for p in parts], dim=1)


def unpack(packed: np.ndarray, height: int, width: int,
           outputs: tuple[str, ...]) -> list[Rendered]:
    """Split an N x K array from :func:`render_packed` into per-frame views (no copies)."""
    frames = []
    for row in packed:
        out: Rendered = {}
        offset = 0
        for key in outputs:
            size = height * width * CHANNELS[key]
            shape = (height, width) if CHANNELS[key] == 1 else (height, width, 3)
            out[key] = row[offset:offset + size].reshape(shape)
            offset += size
        frames.append(out)
    return frames


class GraphCache:
    """CUDA graphs of ``render`` captured per key, with their static input and output tensors.

    ``render(batch, outputs)`` must run without host synchronisation. A key's first use warms
    the function up on a side stream (cuDNN picks its algorithms) and captures it; later uses
    copy the input into the static input tensor and replay. At most ``size`` graphs are kept.
    """

    def __init__(self, render: Callable[[torch.Tensor, tuple[str, ...]], torch.Tensor],
                 device: torch.device, size: int = MAX_GRAPHS) -> None:
        self.render, self.device, self.size = render, device, size
        self._graphs: OrderedDict[GraphKey, tuple[torch.cuda.CUDAGraph, torch.Tensor,
                                                  torch.Tensor]] = OrderedDict()
        self.captures = 0

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, batch: torch.Tensor, outputs: tuple[str, ...], tag: object = None
            ) -> torch.Tensor:
        """``render(batch, outputs)`` by graph replay; ``batch`` may be pinned host memory.
        ``tag`` is part of the key: what else the captured work depends on (the network
        size)."""
        n, h, w = batch.shape[:3]
        key = (n, h, w, outputs, tag)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(batch, non_blocking=True)
        graph.replay()
        return static_out

    def _capture(self, key: GraphKey) -> tuple[torch.cuda.CUDAGraph, torch.Tensor,
                                               torch.Tensor]:
        n, h, w, outputs, _ = key
        while len(self._graphs) >= self.size:
            self._graphs.popitem(last=False)
        static_in = torch.zeros((n, h, w, 3), dtype=torch.uint8, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.render(static_in, outputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.render(static_in, outputs)
        self._graphs[key] = (graph, static_in, static_out)
        self.captures += 1
        return self._graphs[key]
