"""The inference core: weights + device -> labels, drivable mask and confidence (no ROS).

On CUDA, :meth:`Segmenter.render_batch` is the fast path: frames go to the GPU once from
pinned memory, everything up to the colour and overlay images runs there (fp16 and
channels_last by default, replayed as CUDA graphs captured per input shape) and one copy
brings all outputs back. See :mod:`ssnet_ros.core.render`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelCard, load_checkpoint
from .drivable import OFF, DrivableRule, check_classes, decide, fallback_labels, keep_connected
from ..errors import SSNetError
from .image_limits import MAX_SIDE
from .input_size import auto_input_size, input_size_problem
from .preprocessing import check_rgb, normalize, resize_frames, resize_nearest, resize_uint8
from .render import OUTPUT_KEYS, PACK_ORDER, TRUST_KEY, DeviceTables, GraphCache, HostBuffers, \
    Rendered, check_outputs, on_device, render_numpy, render_packed, unpack
from .visualize import alpha_weight
from .trust import FEATURES as TRUST_FEATURES
from .trust import TrustModel, trust_features
from .visualize import palette_lut

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "ssnet_camvid.pt"
CPU_BATCH_PIXELS = 16384
"""On the CPU, render_batch runs forward passes of at most this many network-input pixels:
measured on SSNet, batching pays below ~10k pixels per frame (1.56x per frame at 48x32) and
costs above (0.93x at 480x360, 0.87x at 1242x375), where the activations outgrow the caches."""
TRAIN_HINT = ("train one with `ssnet-train --model ssnet --dataset camvid "
              "--root ../shared/data/camvid --out runs/ssnet` and pass runs/ssnet/best.pt")


@dataclass(frozen=True)
class SegmentationResult:
    """Per-pixel outputs at the input image's resolution."""

    labels: np.ndarray
    """HxW uint8 class ids."""
    drivable: np.ndarray
    """HxW bool, True where the class is drivable."""
    confidence: np.ndarray | None
    """HxW float32 maximum softmax probability (None when not requested)."""
    drivable_trust: float | None = None
    """Predicted IoU of ``drivable`` (0..1) from the card's trust model
    (:mod:`ssnet_ros.core.trust`); None when the card has none or it was not requested."""
    trust_features: np.ndarray | None = None
    """The frame's trust features (:data:`ssnet_ros.core.trust.FEATURES`), when requested."""


def default_weights() -> Path | None:
    """The weights file shipped with the package, or None when this install ships none."""
    return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None


def shipped_weights() -> dict[str, Path]:
    """The weights files shipped with the package, by name (file stem, e.g. ``fcn8s_camvid``)."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.pt"))}


def resolve_weights(weights: str | Path | None) -> Path:
    """``weights`` as a Path, or the shipped default; raise SSNetError saying how to get one.

    A bare name that is no file here (``fcn8s_camvid`` or ``fcn8s_camvid.pt``) names one of
    the :func:`shipped_weights`."""
    if weights not in (None, ""):
        path = Path(weights).expanduser()
        if not path.exists() and path.parent == Path("."):
            shipped = shipped_weights().get(path.name.removesuffix(".pt"))
            if shipped is not None:
                return shipped
            if path.name.removesuffix(".pt") != DEFAULT_WEIGHTS.stem:
                return path
        else:
            return path
    default = default_weights()
    if default is None:
        raise SSNetError(f"no weights given and this installation ships no default weights "
                         f"file ({DEFAULT_WEIGHTS}); set the weights parameter to a checkpoint, "
                         f"or {TRAIN_HINT}")
    return default


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; an unavailable CUDA device raises SSNetError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise SSNetError(f"device {device!r} is not a torch device (use auto, cpu, cuda, "
                         f"cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SSNetError(f"device {device!r} requested but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise SSNetError(f"device {device!r} is not supported (use auto, cpu, cuda, cuda:N)")
    return dev


def bf16_is_native(device: torch.device, capability: tuple[int, int] | None = None) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA GPUs from Ampere on (compute
    capability 8.0; older ones emulate it or refuse it). ``capability``: (major, minor),
    default the device's own. False on the CPU (see training's bf16_is_fast)."""
    if device.type != "cuda":
        return False
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    return tuple(capability) >= (8, 0)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' -> fp16 on CUDA, fp32 on CPU; fp16 on the CPU is refused (it is slow there)."""
    if precision not in PRECISIONS:
        raise SSNetError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise SSNetError("precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return _DTYPES[precision]


class Segmenter:
    """Semantic segmentation of RGB images with a trained ssnet_ros checkpoint.

    ``weights=None`` uses the shipped default. ``input_size`` (height, width) resizes every
    image to the network's input size and resizes the results back (nearest); None (auto)
    picks the size per image size by the model card's rule (:mod:`ssnet_ros.core.input_size`,
    using ``focal_px`` when known) so the world appears at the trained scale, or runs at the
    image's own size for checkpoints without a rule; ``"native"`` always runs at the image's
    own size. ``flip`` averages the logits of the image and its mirror image (2x the work).
    ``drivable_classes`` overrides the checkpoint's drivable class names; ``drivable_rule``
    (default: the measured defaults of :mod:`ssnet_ros.core.drivable`) decides which
    drivable-labelled pixels stay drivable, in the labels and the mask alike.
    ``cuda_graphs`` (default: on for CUDA) replays :meth:`render_batch` as CUDA graphs.
    """

    def __init__(self, weights: str | Path | None = None, *, device: str | torch.device = "auto",
                 precision: str | torch.dtype = "auto",
                 input_size: tuple[int, int] | str | None = None,
                 drivable_classes: Sequence[str] | None = None,
                 warmup: bool | None = None, cuda_graphs: bool | None = None,
                 focal_px: float | None = None, flip: bool = False,
                 drivable_rule: DrivableRule | None = None) -> None:
        self.weights: Path | None = resolve_weights(weights)
        model, card = load_checkpoint(self.weights)
        self.focal_px = focal_px
        """The camera's focal length in pixels (camera_info K[0]) for the automatic size."""
        self._setup(FlipAveraged(model) if flip else model, card, device=device,
                    precision=precision, input_size=input_size,
                    drivable_classes=drivable_classes, warmup=warmup, cuda_graphs=cuda_graphs,
                    drivable_rule=DrivableRule() if drivable_rule is None else drivable_rule)

    @classmethod
    def from_model(cls, model: torch.nn.Module, card: ModelCard, *, device: str = "auto",
                   precision: str = "auto", input_size: tuple[int, int] | str | None = None,
                   warmup: bool | None = False, cuda_graphs: bool | None = False,
                   drivable_rule: DrivableRule = OFF) -> Segmenter:
        """Wrap an in-memory model (e.g. during training) with the same inference path
        (by default without a drivable rule: the network's own labels)."""
        self = cls.__new__(cls)
        self.weights = None
        self.focal_px = None
        self._setup(model, card, device=device, precision=precision, input_size=input_size,
                    drivable_classes=None, warmup=warmup, cuda_graphs=cuda_graphs,
                    drivable_rule=drivable_rule)
        return self

    def _setup(self, model: torch.nn.Module, card: ModelCard, *, device: str | torch.device,
               precision: str | torch.dtype,
               input_size: tuple[int, int] | str | None,
               drivable_classes: Sequence[str] | None,
               warmup: bool | None, cuda_graphs: bool | None,
               drivable_rule: DrivableRule) -> None:
        # the node's parameters come resolved (validated once, there); names are resolved here
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = precision if isinstance(precision, torch.dtype) else \
            resolve_precision(precision, self.device)
        self.card: ModelCard = card
        if drivable_classes is not None:
            unknown = [c for c in drivable_classes if c not in card.class_names]
            if unknown:
                raise SSNetError(f"drivable classes {unknown} are not classes of the model "
                                 f"({', '.join(card.class_names)})")
            self.card = card.replace(drivable_classes=list(drivable_classes))
        self.native = input_size == "native"
        if isinstance(input_size, str) and not self.native:
            raise SSNetError(f"input_size {input_size!r} must be (height, width), 'native' or "
                             f"None (automatic)")
        if self.native:
            input_size = None
        if input_size is not None and (len(input_size) != 2 or min(input_size) < 1
                                       or max(input_size) > MAX_SIDE):
            raise SSNetError(f"input_size {input_size} must be (height, width) within "
                             f"1..{MAX_SIDE}")
        self.input_size = (int(input_size[0]), int(input_size[1])) if input_size else None
        """The fixed network input size (height, width); None: automatic or native."""
        if self.input_size is not None:
            problem = input_size_problem(*self.input_size, self.device)
            if problem:
                raise SSNetError(f"input_size: {problem}")
        self.channels_last = self.device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, dtype=self.dtype, memory_format=memory_format).eval()
        lut = torch.zeros(256, dtype=torch.bool)
        lut[list(self.card.drivable_ids)] = True
        self._host_lut = lut.numpy()
        self._drivable_lut = lut.to(self.device)
        self._drivable_classes = self._drivable_lut[:self.card.num_classes]
        check_classes(self.card.drivable_ids, self.card.num_classes, drivable_rule)
        self.drivable_rule: DrivableRule = drivable_rule
        """The drivable decision in force (change it with :meth:`set_drivable_rule`)."""
        self.trust_model: TrustModel | None = \
            TrustModel.from_dict(card.trust) if card.trust else None
        """The card's drivable trust model (None: the card has none)."""
        self._palette = palette_lut(self.card.palette)
        self._mean = torch.tensor(self.card.mean, dtype=torch.float32, device=self.device)
        self._std = torch.tensor(self.card.std, dtype=torch.float32, device=self.device)
        self._tables: DeviceTables | None = None
        self._graphs: GraphCache | None = None
        self._host = HostBuffers(pin=self.device.type == "cuda")
        self._lock = threading.Lock()
        self.graph_error: str | None = None
        """Why CUDA graphs were turned off, or the last capture that ran out of memory (then
        that key runs eager and the other graphs stay); None: no capture failed."""
        if self.device.type == "cuda":
            # process-wide: fixed shapes per camera, so autotune once per shape
            torch.backends.cudnn.benchmark = True
            self._use_device_path(cuda_graphs is None or cuda_graphs)
        elif cuda_graphs:
            raise SSNetError("cuda_graphs needs a CUDA device")
        if warmup if warmup is not None else self.device.type == "cuda":
            h, w = self.input_size or self.card.train_size
            self.segment_batch([np.zeros((h, w, 3), np.uint8)])

    def _use_device_path(self, graphs: bool) -> None:
        """Run :meth:`render_batch` as the GPU does (render_packed, staged host buffers and,
        with ``graphs``, a :class:`GraphCache`) on this Segmenter's device: on CUDA always; on
        the CPU only where a test checks the GPU's code with the CPU."""
        self._tables = DeviceTables(self.card.mean, self.card.std, self._palette,
                                    self.card.drivable_ids, self.device)
        self._tables.floor.fill_(self.drivable_rule.floor)
        self._graphs = GraphCache(self._render_packed, self.device) if graphs else None

    cache_resets = 0
    """Times the captured CUDA graphs were dropped for a change of settings (counted on every
    device: the CPU path counts the event the CUDA path pays for). A change of focal length
    drops none: the graph key holds the network size."""

    def set_focal_length(self, focal_px: float | None) -> None:
        """Use the camera's focal length (pixels, camera_info K[0]; None: unknown) for the
        automatic input size from now on. Captured graphs stay: their key holds the network
        size, so a change of focal length that keeps it reuses them."""
        if focal_px is not None and not (math.isfinite(focal_px) and focal_px > 0):
            focal_px = None
        self.focal_px = focal_px

    def warm_up(self, height: int, width: int, *, batch: int = 1,
                outputs: Collection[str] = OUTPUT_KEYS,
                focal_px: float | None | str = "current") -> None:
        """Run :meth:`render_batch` once on black frames of this size, batch and output set
        (and ``focal_px``, for this call only; default: the current one), so the first real
        frames of that key find its CUDA graph captured and cuDNN's algorithms chosen (the
        node calls it when a camera's camera_info gives its size)."""
        keys = check_outputs(outputs)
        frames = [np.zeros((height, width, 3), np.uint8)] * batch
        with self._lock:
            saved = self.focal_px
            if focal_px != "current":
                self.set_focal_length(focal_px)  # type: ignore[arg-type]
            try:
                self._render_groups(frames, keys, 0, 0.0, [{} for _ in frames])
            finally:
                self.focal_px = saved

    def set_drivable_rule(self, rule: DrivableRule) -> None:
        """Decide the drivable mask (and the labels) by ``rule`` from now on."""
        check_classes(self.card.drivable_ids, self.card.num_classes, rule)
        old, self.drivable_rule = self.drivable_rule, rule
        if self._tables is not None:
            self._tables.floor.fill_(rule.floor)  # captured graphs read its current value
        if (old.floor > 0.0) != (rule.floor > 0.0):  # floor on or off: another render
            self.cache_resets += 1
            if self._graphs is not None:
                self._graphs = GraphCache(self._render_packed, self.device)

    def network_size(self, height: int, width: int,
                     focal_px: float | None | str = "current") -> tuple[int, int] | None:
        """The network input (height, width) for an image of this size; None: its own size.
        ``focal_px``: a camera's focal length (default: the one set)."""
        if self.input_size is not None or self.native:
            return self.input_size
        focal = self.focal_px if isinstance(focal_px, str) else _usable_focal(focal_px)
        return auto_input_size(self.card.input_rule, height, width, focal)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names, index = class id."""
        return self.card.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """RGB colour of each class."""
        return self.card.palette

    @property
    def drivable_ids(self) -> tuple[int, ...]:
        """Class ids counted as drivable."""
        return self.card.drivable_ids

    @property
    def drivable_lut(self) -> np.ndarray:
        """256 bools by class id, True for a drivable class: the drivable mask is always
        ``drivable_lut[labels]``."""
        return self._host_lut

    @property
    def cuda_graphs(self) -> bool:
        """True while :meth:`render_batch` replays CUDA graphs."""
        return self._graphs is not None

    @property
    def graphs_captured(self) -> int:
        """CUDA graphs captured so far (one per batch size, image size, network size and
        output set)."""
        return 0 if self._graphs is None else self._graphs.captures

    def graph_key(self, batch: int, height: int, width: int,
                  outputs: Collection[str]) -> tuple[object, ...]:
        """The :class:`GraphCache` key of a render_batch of ``batch`` frames of this size."""
        net = self.network_size(height, width)
        return (batch, height, width, None if net is None else tuple(net),
                check_outputs(outputs))

    def has_graph(self, batch: int, height: int, width: int, outputs: Collection[str]) -> bool:
        """True when a graph for this batch, size and output set is captured and kept."""
        return self._graphs is not None and \
            self.graph_key(batch, height, width, outputs) in self._graphs

    def __call__(self, image: np.ndarray, *, confidence: bool = True,
                 trust: bool = True) -> SegmentationResult:
        """Segment one HxWx3 uint8 RGB image."""
        return self.segment_batch([image], confidence=confidence, trust=trust)[0]

    def segment_batch(self, images: Sequence[np.ndarray], *, confidence: bool = True,
                      trust: bool = True) -> list[SegmentationResult]:
        """Segment several images; images of equal size share one forward pass. ``trust``
        adds each frame's trust features and, with a trust model, its drivable trust."""
        results: list[SegmentationResult | None] = [None] * len(images)
        for indices in _size_groups(images):
            batch = np.stack([images[i] for i in indices])
            labels, drivable, conf, feats = self._infer(torch.from_numpy(batch),
                                                        confidence=confidence, trust=trust)
            scores = self.drivable_trust(feats) if feats is not None else None
            for j, i in enumerate(indices):
                results[i] = SegmentationResult(
                    labels[j], drivable[j], None if conf is None else conf[j],
                    None if scores is None else float(scores[j]),
                    None if feats is None else feats[j])
        return results  # type: ignore[return-value]

    def drivable_trust(self, features: np.ndarray) -> np.ndarray | None:
        """(N,) drivable trust of (N, features) trust features; None without a trust model."""
        if self.trust_model is None:
            return None
        return self.trust_model.predict(features).astype(np.float32)

    def render_batch(self, images: Sequence[np.ndarray],
                     outputs: Collection[str] = OUTPUT_KEYS, *,
                     overlay_alpha: float = 0.5, trust: bool = False,
                     focal_px: float | None | str = "current") -> list[Rendered]:
        """Message-ready uint8 outputs of several HxWx3 RGB images, one dict per image.

        ``outputs`` picks from :data:`ssnet_ros.core.render.OUTPUT_KEYS`: labels (HxW class ids),
        drivable_mask (HxW, 255 drivable), confidence (HxW, max. softmax x 255), color and
        overlay (HxWx3 RGB; overlay blends ``overlay_alpha`` of the colours over the image).
        Images of equal size share one forward pass (on the CPU, up to
        :data:`CPU_BATCH_PIXELS` network-input pixels). On CUDA everything runs on the GPU and
        the arrays are views of one pinned buffer per size; on the CPU numpy draws them.
        ``trust`` adds ``trust_features`` (float32 vector) and, with a trust model,
        ``drivable_trust`` (a float32 scalar array) to each frame's dict.
        ``focal_px``: the focal length of this call's camera (default: the one set with
        :meth:`set_focal_length`), for this call only: no graph is dropped (their key holds
        the network size). One caller at a time.
        """
        if focal_px != "current":
            saved = self.focal_px
            self.focal_px = None if isinstance(focal_px, str) else _usable_focal(focal_px)
            try:
                return self.render_batch(images, outputs, overlay_alpha=overlay_alpha,
                                         trust=trust)
            finally:
                self.focal_px = saved
        keys = check_outputs(outputs)
        weight = alpha_weight(overlay_alpha)
        results: list[Rendered] = [{} for _ in images]
        if trust:
            keys += (TRUST_KEY,)
        if not keys:
            return results
        with self._lock:  # one caller at a time: graphs, buffers and tables are shared
            self._render_groups(images, keys, weight, overlay_alpha, results)
        if trust:
            feats = np.stack([r[TRUST_KEY] for r in results]) if results else None
            scores = self.drivable_trust(feats) if feats is not None else None
            for j, out in enumerate(results):
                out["trust_features"] = out.pop(TRUST_KEY)
                if scores is not None:
                    out["drivable_trust"] = scores[j:j + 1].reshape(())
        return results

    def _render_groups(self, images: Sequence[np.ndarray], keys: tuple[str, ...], weight: int,
                       overlay_alpha: float, results: list[Rendered]) -> None:
        for indices in _size_groups(images):
            group = [images[i] for i in indices]
            if self._tables is not None:
                rendered = self._render_device(group, keys, weight, overlay_alpha)
            else:
                h, w = self.network_size(*group[0].shape[:2]) or group[0].shape[:2]
                step = max(1, CPU_BATCH_PIXELS // (h * w))
                rendered = [out for start in range(0, len(group), step) for out in
                            self._render_host(group[start:start + step], keys, overlay_alpha)]
            for i, out in zip(indices, rendered):
                results[i] = out

    def _render_host(self, images: list[np.ndarray], keys: tuple[str, ...],
                     alpha: float) -> list[Rendered]:
        """The network on the CPU, numpy drawing (the fastest there)."""
        labels, drivable, conf, feats = self._infer(torch.from_numpy(np.stack(images)),
                                                    confidence="confidence" in keys,
                                                    trust=TRUST_KEY in keys)
        frames = render_numpy(images, labels, drivable, conf, keys, self._palette, alpha)
        if feats is not None:
            for out, row in zip(frames, feats):
                out[TRUST_KEY] = row
        return frames

    @torch.inference_mode()
    def _render_device(self, images: list[np.ndarray], keys: tuple[str, ...],
                       weight: int, alpha: float) -> list[Rendered]:
        """One H2D copy from a reused pinned buffer, the GPU pipeline (graph replay), one D2H
        copy into fresh pinned memory (the returned arrays are views of it).

        With the connected pass the GPU returns the labels (floor applied), fallback labels
        and confidence; the pass and the drawing run on the host (numpy)."""
        assert self._tables is not None
        wanted, connected = keys, self.drivable_rule.connected
        if connected:
            keys = tuple(k for k in PACK_ORDER if k in ("labels", "fallback")
                         or (k == "confidence" and k in wanted))
            keys += (TRUST_KEY,) if TRUST_KEY in wanted else ()
        h, w = images[0].shape[:2]
        net = self.network_size(h, w)
        pin = self._host.pin
        with on_device(self.device):
            host = self._host.get((len(images), h, w, 3))
            np.stack(images, out=host.numpy())
            self._tables.alpha.fill_(weight)
            packed = None
            if self._graphs is not None:
                packed = self._graphs.run(host, keys, net)
                self.graph_error = self._graphs.error
                if not self._graphs.enabled:  # an op that cannot be captured: stay eager
                    self._graphs = None
            if packed is None:
                packed = self._render_packed(host.to(self.device, non_blocking=pin), keys, net)
            result = torch.empty(packed.shape, dtype=torch.uint8, pin_memory=pin)
            result.copy_(packed, non_blocking=pin)
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
        frames = unpack(result.numpy(), h, w, keys, len(TRUST_FEATURES))
        if not connected:
            return frames
        labels = keep_connected(np.stack([f["labels"] for f in frames]),
                                np.stack([f["fallback"] for f in frames]), self._host_lut)
        drawn = render_numpy(images, labels, self._host_lut[labels], None,
                             tuple(k for k in wanted if k not in ("confidence", TRUST_KEY)),
                             self._palette, alpha)
        for out, frame in zip(drawn, frames):
            for key in ("confidence", TRUST_KEY):
                if key in wanted:
                    out[key] = frame[key]
        return drawn

    def _render_packed(self, batch: torch.Tensor, keys: tuple[str, ...],
                       net: tuple[int, int] | None) -> torch.Tensor:
        assert self._tables is not None
        return render_packed(self.model, batch, keys, self._tables, dtype=self.dtype,
                             channels_last=self.channels_last, input_size=net,
                             floor=self.drivable_rule.floor > 0.0)

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor, *, confidence: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """NHWC uint8 RGB batch -> (labels, drivable, confidence) numpy arrays, NxHxW; the
        labels and the mask decided by :attr:`drivable_rule` (the mask is always the drivable
        classes of the labels)."""
        return self._infer(batch, confidence=confidence, trust=False)[:3]

    @torch.inference_mode()
    def _infer(self, batch: torch.Tensor, *, confidence: bool, trust: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """:meth:`predict` plus the (N, features) trust features when ``trust``."""
        rule = self.drivable_rule
        labels, conf, fallback, feats = self._network(
            batch, confidence=confidence or rule.floor > 0.0, fallback=rule.active, trust=trust)
        labels = decide(labels, conf, fallback, self._host_lut, rule)
        return labels, self._host_lut[labels], conf if confidence else None, feats

    @torch.inference_mode()
    def network_outputs(self, batch: torch.Tensor, *, confidence: bool = True,
                        fallback: bool = False
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """NHWC uint8 RGB batch -> the network's own (labels, top-class confidence, fallback
        labels), NxHxW numpy at the images' size, before any drivable rule (None: not asked).

        The fallback label is the most likely class that is not drivable
        (:func:`ssnet_ros.core.drivable.fallback_labels`)."""
        return self._network(batch, confidence=confidence, fallback=fallback, trust=False)[:3]

    @torch.inference_mode()
    def _network(self, batch: torch.Tensor, *, confidence: bool, fallback: bool, trust: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                            np.ndarray | None]:
        """:meth:`network_outputs` plus the (N, features) trust features when ``trust``."""
        logits, size = self.logits(batch)
        labels = resize_nearest(logits.argmax(dim=1).to(torch.uint8), size)
        conf = fb = None
        if confidence:  # labels never depend on whether confidence was asked for
            conf = resize_nearest(torch.softmax(logits.float(), dim=1).amax(dim=1), size)
            conf = conf.cpu().numpy()
        if fallback:
            fb = fallback_labels(logits, self._drivable_classes).to(torch.uint8)
            fb = resize_nearest(fb, size).cpu().numpy()
        feats = trust_features(logits, self._drivable_lut).cpu().numpy() if trust else None
        return labels.cpu().numpy(), conf, fb, feats

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """NHWC uint8 RGB batch -> (logits at the network's input size, original (H, W))."""
        size = (int(batch.shape[1]), int(batch.shape[2]))
        net = self.network_size(*size)
        if net is not None and self.device.type == "cpu" and batch.device.type == "cpu":
            batch = resize_uint8(batch, net)  # OpenCV: the fastest on the host
        with on_device(self.device):  # resize_frames: the same frames on the device
            x = resize_frames(batch.to(self.device, non_blocking=batch.is_pinned()), net)
            x = normalize(x, self._mean, self._std, dtype=self.dtype,
                          channels_last=self.channels_last)
            return self.model(x), size


class FlipAveraged(torch.nn.Module):
    """Test-time augmentation: the mean of the logits of an image and of its mirror image."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` averaged with the mirrored logits of mirrored ``x``."""
        return 0.5 * (self.model(x) + self.model(x.flip(-1)).flip(-1))


def _usable_focal(focal_px: float | None) -> float | None:
    """A focal length in pixels, or None when it is not a positive finite number."""
    return focal_px if focal_px is not None and math.isfinite(focal_px) and focal_px > 0 \
        else None


def _size_groups(images: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``images`` grouped by (height, width), in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        check_rgb(image)
        groups.setdefault(image.shape[:2], []).append(i)
    return list(groups.values())
