"""The inference core: weights + device -> labels, drivable mask and confidence (no ROS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelCard, load_checkpoint
from .errors import SSNetError
from .preprocessing import check_rgb, normalize, resize_input, resize_nearest

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "ssnet_camvid.pt"
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


def resolve_weights(weights: str | Path | None) -> Path:
    """``weights`` as a Path, or the shipped default; raise SSNetError saying how to get one."""
    if weights not in (None, ""):
        return Path(weights).expanduser()
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
    image to the network's input size and resizes the results back (nearest); None runs at
    the image's own size. ``drivable_classes`` overrides the checkpoint's drivable class names.
    """

    def __init__(self, weights: str | Path | None = None, *, device: str = "auto",
                 precision: str = "auto", input_size: tuple[int, int] | None = None,
                 drivable_classes: Sequence[str] | None = None,
                 warmup: bool | None = None) -> None:
        self.weights: Path | None = resolve_weights(weights)
        model, card = load_checkpoint(self.weights)
        self._setup(model, card, device=device, precision=precision, input_size=input_size,
                    drivable_classes=drivable_classes, warmup=warmup)

    @classmethod
    def from_model(cls, model: torch.nn.Module, card: ModelCard, *, device: str = "auto",
                   precision: str = "auto", input_size: tuple[int, int] | None = None,
                   warmup: bool | None = False) -> Segmenter:
        """Wrap an in-memory model (e.g. during training) with the same inference path."""
        self = cls.__new__(cls)
        self.weights = None
        self._setup(model, card, device=device, precision=precision, input_size=input_size,
                    drivable_classes=None, warmup=warmup)
        return self

    def _setup(self, model: torch.nn.Module, card: ModelCard, *, device: str, precision: str,
               input_size: tuple[int, int] | None, drivable_classes: Sequence[str] | None,
               warmup: bool | None) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.card: ModelCard = card
        if drivable_classes is not None:
            unknown = [c for c in drivable_classes if c not in card.class_names]
            if unknown:
                raise SSNetError(f"drivable classes {unknown} are not classes of the model "
                                 f"({', '.join(card.class_names)})")
            self.card = card.replace(drivable_classes=list(drivable_classes))
        if input_size is not None and (len(input_size) != 2 or min(input_size) < 1):
            raise SSNetError(f"input_size {input_size} must be (height, width) >= 1")
        self.input_size = (int(input_size[0]), int(input_size[1])) if input_size else None
        self.channels_last = self.device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, dtype=self.dtype, memory_format=memory_format).eval()
        lut = torch.zeros(256, dtype=torch.bool)
        lut[list(self.card.drivable_ids)] = True
        self._drivable_lut = lut.to(self.device)
        if warmup if warmup is not None else self.device.type == "cuda":
            h, w = self.input_size or self.card.train_size
            self.segment_batch([np.zeros((h, w, 3), np.uint8)])

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

    def __call__(self, image: np.ndarray, *, confidence: bool = True) -> SegmentationResult:
        """Segment one HxWx3 uint8 RGB image."""
        return self.segment_batch([image], confidence=confidence)[0]

    def segment_batch(self, images: Sequence[np.ndarray], *,
                      confidence: bool = True) -> list[SegmentationResult]:
        """Segment several images; images of equal size share one forward pass."""
        for image in images:
            check_rgb(image)
        results: list[SegmentationResult | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        for indices in groups.values():
            batch = np.stack([images[i] for i in indices])
            labels, drivable, conf = self.predict(torch.from_numpy(batch), confidence=confidence)
            for j, i in enumerate(indices):
                results[i] = SegmentationResult(
                    labels[j], drivable[j], None if conf is None else conf[j])
        return results  # type: ignore[return-value]

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
        batch = batch.to(self.device, non_blocking=True)
        x = normalize(batch, self.card.mean, self.card.std, dtype=self.dtype,
                      channels_last=self.channels_last)
        return self.model(resize_input(x, self.input_size)), size
