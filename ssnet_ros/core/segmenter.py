"""The inference core: weights + device -> labels, drivable mask and confidence (no ROS).

On CUDA, :meth:`Segmenter.render_batch` is the fast path: frames go to the GPU once from
pinned memory, everything up to the colour and overlay images runs there (fp16 and
channels_last by default, replayed as CUDA graphs captured per input shape) and one copy
brings all outputs back. See :mod:`ssnet_ros.core.render`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelCard, load_checkpoint
from ..errors import SSNetError
from .image_limits import MAX_SIDE
from .input_size import auto_input_size
from .preprocessing import check_rgb, normalize, resize_input, resize_nearest, resize_uint8
from .render import OUTPUT_KEYS, DeviceTables, GraphCache, Rendered, alpha_weight, \
    check_outputs, render_numpy, render_packed, unpack
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
    ``drivable_classes`` overrides the checkpoint's drivable class names.
    ``cuda_graphs`` (default: on for CUDA) replays :meth:`render_batch` as CUDA graphs.
    """

    def __init__(self, weights: str | Path | None = None, *, device: str = "auto",
                 precision: str = "auto",
                 input_size: tuple[int, int] | str | None = None,
                 drivable_classes: Sequence[str] | None = None,
                 warmup: bool | None = None, cuda_graphs: bool | None = None,
                 focal_px: float | None = None, flip: bool = False) -> None:
        self.weights: Path | None = resolve_weights(weights)
        model, card = load_checkpoint(self.weights)
        self.focal_px = focal_px
        """The camera's focal length in pixels (camera_info K[0]) for the automatic size."""
        self._setup(FlipAveraged(model) if flip else model, card, device=device,
                    precision=precision, input_size=input_size,
                    drivable_classes=drivable_classes, warmup=warmup, cuda_graphs=cuda_graphs)

    @classmethod
    def from_model(cls, model: torch.nn.Module, card: ModelCard, *, device: str = "auto",
                   precision: str = "auto", input_size: tuple[int, int] | str | None = None,
                   warmup: bool | None = False, cuda_graphs: bool | None = False
                   ) -> Segmenter:
        """Wrap an in-memory model (e.g. during training) with the same inference path."""
        self = cls.__new__(cls)
        self.weights = None
        self.focal_px = None
        self._setup(model, card, device=device, precision=precision, input_size=input_size,
                    drivable_classes=None, warmup=warmup, cuda_graphs=cuda_graphs)
        return self

    def _setup(self, model: torch.nn.Module, card: ModelCard, *, device: str, precision: str,
               input_size: tuple[int, int] | str | None,
               drivable_classes: Sequence[str] | None,
               warmup: bool | None, cuda_graphs: bool | None) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
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
        self.channels_last = self.device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, dtype=self.dtype, memory_format=memory_format).eval()
        lut = torch.zeros(256, dtype=torch.bool)
        lut[list(self.card.drivable_ids)] = True
        self._drivable_lut = lut.to(self.device)
        self._palette = palette_lut(self.card.palette)
        self._tables: DeviceTables | None = None
        self._graphs: GraphCache | None = None
        self.graph_error: str | None = None
        """Why CUDA graphs were turned off after a failed capture (None: they were not)."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes per camera: autotune once
            self._tables = DeviceTables(self.card.mean, self.card.std, self._palette,
                                        self.card.drivable_ids, self.device)
            if cuda_graphs is None or cuda_graphs:
                self._graphs = GraphCache(self._render_packed, self.device)
        elif cuda_graphs:
            raise SSNetError("cuda_graphs needs a CUDA device")
        if warmup if warmup is not None else self.device.type == "cuda":
            h, w = self.input_size or self.card.train_size
            self.segment_batch([np.zeros((h, w, 3), np.uint8)])

    cache_resets = 0
    """Times :meth:`set_focal_length` changed the focal length, which drops the captured CUDA
    graphs (counted on every device: the CPU path counts the event the CUDA path pays for).
    Cameras that give their focal length per call (:meth:`render_batch`) cause none."""

    def set_focal_length(self, focal_px: float | None) -> None:
        """Use the camera's focal length (pixels, camera_info K[0]; None: unknown) for the
        automatic input size from now on."""
        focal_px = _usable_focal(focal_px)
        if focal_px == self.focal_px:
            return
        self.focal_px = focal_px
        self.cache_resets += 1
        if self._graphs is not None:  # captured graphs hold the old network size
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
    def cuda_graphs(self) -> bool:
        """True while :meth:`render_batch` replays CUDA graphs."""
        return self._graphs is not None

    @property
    def graphs_captured(self) -> int:
        """CUDA graphs captured so far (one per batch size, image size and output set)."""
        return 0 if self._graphs is None else self._graphs.captures

    def __call__(self, image: np.ndarray, *, confidence: bool = True) -> SegmentationResult:
        """Segment one HxWx3 uint8 RGB image."""
        return self.segment_batch([image], confidence=confidence)[0]

    def segment_batch(self, images: Sequence[np.ndarray], *,
                      confidence: bool = True) -> list[SegmentationResult]:
        """Segment several images; images of equal size share one forward pass."""
        results: list[SegmentationResult | None] = [None] * len(images)
        for indices in _size_groups(images):
            batch = np.stack([images[i] for i in indices])
            labels, drivable, conf = self.predict(torch.from_numpy(batch), confidence=confidence)
            for j, i in enumerate(indices):
                results[i] = SegmentationResult(
                    labels[j], drivable[j], None if conf is None else conf[j])
        return results  # type: ignore[return-value]

    def render_batch(self, images: Sequence[np.ndarray],
                     outputs: Collection[str] = OUTPUT_KEYS, *,
                     overlay_alpha: float = 0.5,
                     focal_px: float | None | str = "current") -> list[Rendered]:
        """Message-ready uint8 outputs of several HxWx3 RGB images, one dict per image.

        ``outputs`` picks from :data:`ssnet_ros.core.render.OUTPUT_KEYS`: labels (HxW class ids),
        drivable_mask (HxW, 255 drivable), confidence (HxW, max. softmax x 255), color and
        overlay (HxWx3 RGB; overlay blends ``overlay_alpha`` of the colours over the image).
        Images of equal size share one forward pass (on the CPU, up to
        :data:`CPU_BATCH_PIXELS` network-input pixels). On CUDA everything runs on the GPU and
        the arrays are views of one pinned buffer per size; on the CPU numpy draws them.
        ``focal_px``: the focal length of this call's camera (default: the one set with
        :meth:`set_focal_length`), for this call only: no graph is dropped (their key holds
        the network size). One caller at a time.
        """
        if focal_px != "current":
            saved = self.focal_px
            self.focal_px = None if isinstance(focal_px, str) else _usable_focal(focal_px)
            try:
                return self.render_batch(images, outputs, overlay_alpha=overlay_alpha)
            finally:
                self.focal_px = saved
        keys = check_outputs(outputs)
        weight = alpha_weight(overlay_alpha)
        results: list[Rendered] = [{} for _ in images]
        if not keys:
            return results
        for indices in _size_groups(images):
            group = [images[i] for i in indices]
            if self._tables is not None:
                rendered = self._render_device(group, keys, weight)
            else:
                h, w = self.network_size(*group[0].shape[:2]) or group[0].shape[:2]
                step = max(1, CPU_BATCH_PIXELS // (h * w))
                rendered = [out for start in range(0, len(group), step) for out in
                            self._render_host(group[start:start + step], keys, overlay_alpha)]
            for i, out in zip(indices, rendered):
                results[i] = out
        return results

    def _render_host(self, images: list[np.ndarray], keys: tuple[str, ...],
                     alpha: float) -> list[Rendered]:
        """The network on the CPU, numpy drawing (the fastest there)."""
        labels, drivable, conf = self.predict(torch.from_numpy(np.stack(images)),
                                              confidence="confidence" in keys)
        return render_numpy(images, labels, drivable, conf, keys, self._palette, alpha)

    @torch.inference_mode()
    def _render_device(self, images: list[np.ndarray], keys: tuple[str, ...],
                       weight: int) -> list[Rendered]:
        """One H2D copy from pinned memory, the GPU pipeline (graph replay), one D2H copy."""
        assert self._tables is not None
        h, w = images[0].shape[:2]
        host = torch.empty((len(images), h, w, 3), dtype=torch.uint8, pin_memory=True)
        np.stack(images, out=host.numpy())
        self._tables.alpha.fill_(weight)
        packed = None
        if self._graphs is not None:
            try:
                packed = self._graphs.run(host, keys, self.network_size(h, w))
            except RuntimeError as exc:  # an op that cannot be captured: stay eager
                self._graphs, self.graph_error = None, f"{type(exc).__name__}: {exc}"
        if packed is None:
            packed = self._render_packed(host.to(self.device, non_blocking=True), keys)
        result = torch.empty(packed.shape, dtype=torch.uint8, pin_memory=True)
        result.copy_(packed, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return unpack(result.numpy(), h, w, keys)

    def _render_packed(self, batch: torch.Tensor, keys: tuple[str, ...]) -> torch.Tensor:
        assert self._tables is not None
        return render_packed(self.model, batch, keys, self._tables, dtype=self.dtype,
                             channels_last=self.channels_last,
                             input_size=self.network_size(*batch.shape[1:3]))

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor, *, confidence: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """NHWC uint8 RGB batch -> (labels, drivable, confidence) numpy arrays, NxHxW."""
        logits, size = self.logits(batch)
        labels = resize_nearest(logits.argmax(dim=1).to(torch.uint8), size)
        conf = None
        if confidence:  # labels never depend on whether confidence was asked for
            conf = resize_nearest(torch.softmax(logits.float(), dim=1).amax(dim=1), size)
        drivable = self._drivable_lut[labels.long()]
        return (labels.cpu().numpy(), drivable.cpu().numpy(),
                None if conf is None else conf.cpu().numpy())

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """NHWC uint8 RGB batch -> (logits at the network's input size, original (H, W))."""
        size = (int(batch.shape[1]), int(batch.shape[2]))
        net = self.network_size(*size)
        if net is not None and self.device.type == "cpu" and batch.device.type == "cpu":
            batch, net = resize_uint8(batch, net), None  # resize before normalising
        batch = batch.to(self.device, non_blocking=True)
        x = normalize(batch, self.card.mean, self.card.std, dtype=self.dtype,
                      channels_last=self.channels_last)
        return self.model(resize_input(x, net)), size


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
