"""Checkpoints: weights plus the metadata everything else derives from (the model card)."""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SSNetError
from .fileio import atomic_path
from .input_size import rule_problems
from .trust import trust_problems
from ..models import build_model, list_models

FORMAT = "ssnet_ros.checkpoint"
FORMAT_VERSION = 1
#: The terms of the datasets weights may be trained on (the weights inherit them).
DATA_LICENCES = {
    "camvid": "CamVid (Brostow et al.): research use; cite it",
    "idd_lite": "IDD / IDD-Lite (IIIT Hyderabad, Intel): non-commercial research use only",
    "cityscapes": "Cityscapes (Daimler, MPI, TU Darmstadt): non-commercial purposes only",
    "kitti_road": "KITTI (KIT, TTI-C): CC BY-NC-SA 3.0, non-commercial",
    "kitti_semantics": "KITTI (KIT, TTI-C): CC BY-NC-SA 3.0, non-commercial",
}
DATA_LICENCES["cityscapes_p2p"] = DATA_LICENCES["cityscapes"]
#: Datasets that read another dataset's frames under other label sets: their frames, splits and
#: terms are the other's.
FRAMES_OF = {"idd_lite_loose": "idd_lite"}
IMAGENET_LICENCE = "VGG-16 encoder initialised from ImageNet weights: non-commercial research"


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint says about its model.

    ``mean``/``std`` normalise RGB pixels in 0..255 units; ``train_size`` is (height, width);
    ``metrics`` holds the measured validation figures (may be empty); ``input_rule`` the
    constants of the automatic network input size (:mod:`ssnet_ros.core.input_size`; empty: run at
    each image's own size); ``training`` the data and recipe the weights were trained with;
    ``data_licence`` the terms of that data, which the weights inherit (empty: derived,
    :meth:`licence`); ``trust`` the drivable trust model (:mod:`ssnet_ros.core.trust`;
    empty: none, older cards).
    """

    model: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    drivable_classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_size: tuple[int, int]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    input_rule: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data_licence: str = ""
    trust: dict[str, Any] = field(default_factory=dict)

    def training_splits(self) -> dict[str, set[str]]:
        """Dataset -> the splits the weights were trained on (``training.datasets``; a card
        without it: the ``train`` split of ``dataset``)."""
        out: dict[str, set[str]] = {}
        for frames, split in self._trained_entries():
            out.setdefault(frames, set()).update(split.split("+"))
        if not out and self.dataset:
            out[self.dataset] = {"train"}
        return out

    def trained_split_names(self, dataset: str) -> set[str]:
        """The exact split strings (``train+val`` whole) of the training datasets that read
        ``dataset``'s frames (``idd_lite_loose`` reads ``idd_lite``'s): what a samples log of
        these weights numbers."""
        whose = FRAMES_OF.get(dataset, dataset)
        return {split for frames, split in self._trained_entries() if frames == whose}

    def _trained_entries(self) -> list[tuple[str, str]]:
        """(whose frames, split string) of each ``training.datasets`` entry."""
        return [(FRAMES_OF.get(str(entry["name"]), str(entry["name"])),
                 str(entry.get("split") or "train"))
                for entry in self.training.get("datasets") or ()
                if isinstance(entry, dict) and entry.get("name")]

    def trained_on(self, dataset: str, split: str) -> str | None:
        """A warning when (part of) ``dataset``/``split`` was training data of these weights:
        scores there measure fit, not generalisation; None when it was held out."""
        frames = FRAMES_OF.get(dataset, dataset)
        seen = sorted(set(split.split("+")) & self.training_splits().get(frames, set()))
        if not seen:
            return None
        return (f"{dataset}/{'+'.join(seen)} was part of this model's training data, so its "
                f"scores there are optimistic (fit, not generalisation); score a split it never "
                f"saw (the card's training.datasets lists what it saw)")

    def licence(self) -> str:
        """The terms of the training data (``data_licence``, else from the datasets)."""
        if self.data_licence:
            return self.data_licence
        names = sorted(self.training_splits())
        terms = [DATA_LICENCES.get(n, f"{n}: see its terms") for n in names]
        if str((self.training.get("recipe") or {}).get("vgg_weights", "none")) != "none":
            terms.append(IMAGENET_LICENCE)
        return "; ".join(terms)

    @property
    def num_classes(self) -> int:
        """Number of classes (the model's output channels)."""
        return len(self.class_names)

    @property
    def drivable_ids(self) -> tuple[int, ...]:
        """Class ids of the drivable classes."""
        return tuple(self.class_names.index(name) for name in self.drivable_classes)

    def problems(self) -> list[str]:
        """Every contradiction in the card (empty when it is consistent)."""
        out = []
        if self.model not in list_models():
            out.append(f"unknown model {self.model!r} (known: {', '.join(list_models())})")
        if not 1 <= self.num_classes <= 255:
            out.append(f"{self.num_classes} classes (1..255 supported)")
        if len(set(self.class_names)) != self.num_classes:
            out.append("class names are not unique")
        if len(self.palette) != self.num_classes:
            out.append(f"palette has {len(self.palette)} colours for {self.num_classes} classes")
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            out.append("palette entries must be three values in 0..255")
        unknown = [n for n in self.drivable_classes if n not in self.class_names]
        if unknown:
            out.append(f"drivable classes {unknown} are not class names")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            out.append("normalization needs three means and three positive stds")
        if len(self.train_size) != 2 or any(not 0 < int(v) <= 16384 for v in self.train_size):
            out.append(f"training resolution {self.train_size} is not (height, width) > 0")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            out.append("normalization values must be finite")
        out += rule_problems(self.input_rule)
        out += trust_problems(self.trust)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dictionary (JSON and torch ``weights_only`` safe)."""
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["palette"] = [list(c) for c in self.palette]
        data["drivable_classes"] = list(self.drivable_classes)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["train_size"] = list(self.train_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError on bad input."""
        return cls(
            model=str(data["model"]),
            class_names=tuple(str(n) for n in data["class_names"]),
            palette=tuple(tuple(int(v) for v in c) for c in data["palette"]),  # type: ignore[misc]
            drivable_classes=tuple(str(n) for n in data["drivable_classes"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            train_size=tuple(int(v) for v in data["train_size"]),  # type: ignore[arg-type]
            model_kwargs=dict(data.get("model_kwargs", {})),
            metrics=dict(data.get("metrics", {})),
            dataset=str(data.get("dataset", "")),
            input_rule={str(k): float(v) for k, v in dict(data.get("input_rule", {})).items()},
            training=dict(data.get("training", {})),
            data_licence=str(data.get("data_licence", "")),
            trust=dict(data.get("trust") or {}),
        )

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` applied."""
        return ModelCard.from_dict({**self.to_dict(), **changes})


def update_card(path: str | Path, **changes: Any) -> ModelCard:
    """Rewrite the card of the checkpoint at ``path`` with ``changes`` (validated); the
    weights (every tensor, its dtype and bytes), the card's other entries and the rest of the
    payload stay as they are."""
    path = Path(path)
    payload = _read_payload(path)
    card = _card_of(path, payload).replace(**changes)
    problems = card.problems()
    if problems:
        raise SSNetError(f"refusing to update {path}: " + "; ".join(problems))
    stored = card.to_dict()
    payload["card"] = {**payload["card"], **{key: stored[key] for key in changes}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return card


def build_from_card(card: ModelCard, **init_kwargs: Any) -> nn.Module:
    """Build the (untrained) model a card describes."""
    return build_model(card.model, num_classes=card.num_classes, **card.model_kwargs,
                       **init_kwargs)


def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard, *,
                    half: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights (fp16 when ``half``) and ``card`` to ``path`` atomically."""
    problems = card.problems()
    if problems:
        raise SSNetError(f"refusing to save {path}: " + "; ".join(problems))
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        state[key] = value.half() if half and value.is_floating_point() else value.clone()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "card": card.to_dict(),
        "state_dict": state,
    }
    if extra:
        payload["extra"] = extra
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


MAX_PICKLE_BYTES = 8 * 1024 * 1024
"""Largest ``data.pkl`` member (the card and the tensors' names; ~10 KB in practice)."""
MAX_MEMBERS = 10_000
"""Most members a checkpoint archive may have (one per tensor, plus a few)."""
MAX_CLASSES = 255
#: the largest model_kwargs a checkpoint's size limit allows for (FCN-8s as VGG-16 has it)
_LARGEST_KWARGS: dict[str, dict[str, Any]] = {"fcn8s": {"fc_channels": 4096}}


@functools.lru_cache(maxsize=1)
def max_tensor_bytes() -> int:
    """The most tensor bytes a checkpoint may hold: fp32 parameters and buffers of the largest
    registered model at :data:`MAX_CLASSES` classes (built on the meta device: no memory),
    plus 5 %. A file whose archive declares more is refused before anything is inflated."""
    largest = 0
    for name in list_models():
        with torch.device("meta"):
            model = build_model(name, num_classes=MAX_CLASSES, **_LARGEST_KWARGS.get(name, {}))
        count = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
        largest = max(largest, count * 4)
    return int(largest * 1.05) + 1024 * 1024


def check_archive(path: Path) -> None:
    """Refuse a weights file whose zip members declare more than a checkpoint can hold (a
    small file that inflates to gigabytes), before torch reads a byte of it."""
    limit = max_tensor_bytes()
    if path.stat().st_size > limit + MAX_PICKLE_BYTES:
        raise SSNetError(f"weights file {path} has {path.stat().st_size / 1e6:.0f} MB, more "
                         f"than any ssnet_ros checkpoint can hold "
                         f"({(limit + MAX_PICKLE_BYTES) / 1e6:.0f} MB)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise SSNetError(f"weights file {path} is corrupt or not a PyTorch file (not the zip "
                         f"archive torch.save writes: {str(exc)[:120]})") from None
    if len(members) > MAX_MEMBERS:
        raise SSNetError(f"weights file {path} has {len(members)} archive members, more "
                         f"than a checkpoint holds ({MAX_MEMBERS})")
    tensors = 0
    for member in members:
        if member.filename.endswith("data.pkl") and member.file_size > MAX_PICKLE_BYTES:
            raise SSNetError(f"weights file {path}: its {member.filename} would inflate to "
                             f"{member.file_size / 1e6:.0f} MB, more than a checkpoint's "
                             f"{MAX_PICKLE_BYTES / 1e6:.0f} MB: refused unread")
        tensors += member.file_size
    if tensors > limit + MAX_PICKLE_BYTES:
        raise SSNetError(f"weights file {path} would inflate to {tensors / 1e6:.0f} MB, more "
                         f"than the largest ssnet_ros model holds ({limit / 1e6:.0f} MB): "
                         f"refused unread")


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SSNetError(f"weights file {path} does not exist")
    if not path.is_file():
        raise SSNetError(f"weights file {path} is not a file")
    check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        text = str(exc).strip()
        if "Unsupported global" in text:
            raise SSNetError(f"weights file {path} holds Python objects besides tensors and "
                             f"plain data, which could run code when loaded; ssnet_ros only "
                             f"reads checkpoints written by ssnet-train") from None
        detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        first = (detail[1] if detail else text.splitlines()[0] if text
                 else type(exc).__name__)[:200]
        raise SSNetError(f"weights file {path} is corrupt or not a PyTorch file ({first})") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SSNetError(f"weights file {path} is not an ssnet_ros checkpoint (no "
                         f"'format: {FORMAT}' entry; train one with ssnet-train)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise SSNetError(f"weights file {path} has checkpoint format version "
                         f"{payload.get('format_version')}, this ssnet_ros reads "
                         f"{FORMAT_VERSION}")
    return payload


def _card_of(path: Path, payload: dict[str, Any]) -> ModelCard:
    try:
        card = ModelCard.from_dict(payload["card"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SSNetError(f"weights file {path} has an unreadable model card ({exc!r})") from exc
    problems = card.problems()
    if problems:
        raise SSNetError(f"weights file {path} contradicts itself: " + "; ".join(problems))
    return card


payload_reads = 0
"""Checkpoint files read (torch.load) in this process: a test counts them."""
_payloads: dict[tuple[str, int, int, int], dict[str, Any]] = {}
_cards: dict[tuple[str, int, int, int], ModelCard] = {}


def _cache_key(path: Path) -> tuple[str, int, int, int] | None:
    """(resolved path, inode, mtime, size): a file replaced or changed is read again."""
    try:
        stat = path.stat()
        return str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size
    except OSError:
        return None


def _payload(path: Path, keep: bool) -> dict[str, Any]:
    """The checkpoint's contents: the one :func:`read_card` kept, else read now. ``keep``
    holds it (one file at most) for the :func:`load_checkpoint` that usually follows: a node
    reads the card for its parameters, then builds the model, from one read of the file."""
    global payload_reads
    key = _cache_key(path)
    payload = _payloads.pop(key, None) if key else None  # dict operations: thread-safe
    if payload is None:
        payload_reads += 1
        payload = _read_payload(path)
    if keep and key:
        _payloads.clear()
        _payloads[key] = payload
    return payload


def read_card(path: str | Path) -> ModelCard:
    """The validated model card of the checkpoint at ``path`` (weights not built; the file is
    read once per process while it does not change)."""
    path = Path(path)
    key = _cache_key(path)
    card = _cards.get(key) if key else None
    if card is None:
        card = _card_of(path, _payload(path, keep=True))
        if key:
            _cards[key] = card
    return card


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Build the model a checkpoint describes and load its weights (fp32, on the CPU, eval)."""
    path = Path(path)
    payload = _payload(path, keep=False)
    card = _card_of(path, payload)
    try:
        model = build_from_card(card)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SSNetError(f"weights file {path}: model {card.model!r} cannot be built with "
                         f"the card's model_kwargs {card.model_kwargs} "
                         f"({' '.join(str(exc).split())[:160]})") from None
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise SSNetError(f"weights file {path} holds no state_dict")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SSNetError(f"weights file {path} has a state_dict entry {bad[0]!r} that is not a "
                         f"tensor")
    broken = [k for k, v in state.items()
              if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise SSNetError(f"weights file {path} holds non-finite values (NaN or inf) in "
                         f"{len(broken)} tensors, e.g. {broken[0]!r}: it is broken")
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise SSNetError(f"weights file {path} does not fit model {card.model!r} with "
                         f"{card.num_classes} classes: {detail}") from exc
    return model.eval(), card
