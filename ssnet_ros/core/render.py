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
from .drivable import apply_floor, fallback_labels
from .preprocessing import normalize, resize_input, resize_nearest
from .visualize import confidence_to_mono8, mask_to_mono8, overlay

#: Output names in packing order, as in the node's publish_* switches.
OUTPUT_KEYS = ("labels", "drivable_mask", "confidence", "color", "overlay")
#: Packing order on the device: the outputs, then the fallback labels (the most likely class
#: that is not drivable; internal, for the connected pass on the host).
PACK_ORDER = OUTPUT_KEYS + ("fallback",)
#: Bytes per pixel of each output (mono8 or rgb8).
CHANNELS = {"labels": 1, "drivable_mask": 1, "confidence": 1, "color": 3, "overlay": 3,
            "fallback": 1}
#: Largest number of CUDA graphs kept per Segmenter (least recently used ones are freed).
MAX_GRAPHS = 8

#: The packed-output key of the frame's trust features (float32 bytes, not an image).
TRUST_KEY = "trust"

Rendered = dict[str, np.ndarray]
GraphKey = tuple[int, int, int, tuple[str, ...]]


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
    x = normalize(batch, tables.mean, tables.std, dtype=dtype, channels_last=channels_last)
    logits = model(resize_input(x, input_size))
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

    def run(self, batch: torch.Tensor, outputs: tuple[str, ...]) -> torch.Tensor:
        """``render(batch, outputs)`` by graph replay; ``batch`` may be pinned host memory."""
        n, h, w = batch.shape[:3]
        key = (n, h, w, outputs)
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
        n, h, w, outputs = key
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
