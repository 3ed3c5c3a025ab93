"""Ground truth for bag frames: a topic of mono8 label images, or a folder of label PNGs.

Label values are class ids of the model (255, and any id past the model's classes, are
ignored, as CamVid's void 11 is by ``ssnet-eval``). Label PNGs in a dataset's own encoding
(Cityscapes label ids, KITTI road colours, ...) are converted with that dataset's decoder.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from . import messages as bm
from .bagfile import BagReader
from ..datasets import DATASETS
from ..errors import SSNetError

LABEL_FORMATS = ("raw", *sorted(DATASETS))
"""raw: PNG values are class ids; a dataset name: decode as that dataset's label files."""
FRAME_NAMES_KEY = "ssnet_ros.frame_names"
"""Bag custom_data key: JSON {stamp_ns: source image name} written by ssnet-make-bag."""
LABEL_FORMAT_KEY = "ssnet_ros.label_format"
"""Bag custom_data key: the label format of the bag's ground-truth topic."""


def label_decoder(fmt: str) -> Callable[[Path], np.ndarray]:
    """A function reading a label PNG in format ``fmt`` as HxW uint8 class ids."""
    if fmt == "raw":
        return _read_raw
    if fmt not in DATASETS:
        raise SSNetError(f"label format {fmt!r} is not one of {', '.join(LABEL_FORMATS)}")
    dataset = DATASETS[fmt].__new__(DATASETS[fmt])  # decoders need no dataset folder
    return dataset.decode_labels


def _read_raw(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise SSNetError(f"cannot read label image {path}")
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise SSNetError(f"label image {path} is {labels.dtype} with shape {labels.shape}; "
                         f"raw labels must be single-channel 8-bit class ids")
    return labels


def frame_names(custom: Mapping[str, str]) -> dict[int, str]:
    """stamp_ns -> source image name, as recorded by ssnet-make-bag (empty when absent)."""
    try:
        return {int(k): str(v) for k, v in json.loads(custom.get(FRAME_NAMES_KEY, "{}")).items()}
    except (ValueError, AttributeError):
        return {}


def stamp_names(stamp: int) -> tuple[str, ...]:
    """The file stems a label PNG of a frame stamped ``stamp`` ns may have."""
    sec, nanosec = divmod(stamp, 1_000_000_000)
    return str(stamp), f"{sec}_{nanosec:09d}", f"{sec}.{nanosec:09d}"


class TruthSource:
    """Ground-truth labels by frame stamp; counts what could not be used."""

    description = ""

    def __init__(self) -> None:
        self.problems: list[str] = []
        """One line per unusable ground-truth item."""
        self.used: set[int] = set()

    def get(self, stamp: int, name: str | None) -> np.ndarray | None:
        """Labels of the frame stamped ``stamp`` ns (named ``name``), or None when unlabelled."""
        raise NotImplementedError

    def unmatched(self) -> int:
        """Ground-truth items that matched no frame so far."""
        raise NotImplementedError


class TruthTopic(TruthSource):
    """mono8 label images on a topic of the bag, matched to frames by header stamp.

    Read in a first pass and kept zlib-compressed (labels compress well), so ground truth may
    be recorded before or after its frame.
    """

    def __init__(self, reader: BagReader, topic: str) -> None:
        super().__init__()
        self.description = f"topic {topic} (matched by header stamp)"
        self._labels: dict[int, tuple[bytes, tuple[int, int]]] = {}
        if topic not in reader.topics:
            raise SSNetError(f"bag {reader.path} has no ground-truth topic {topic} (topics: "
                             f"{', '.join(sorted(reader.topics))})")
        for raw in reader.messages([topic]):
            try:
                msg = bm.deserialize(raw.data, raw.msgtype)
                labels = bm.to_labels(msg)
            except SSNetError as exc:
                self.problems.append(f"{topic} at bag time {raw.timestamp}: {exc}")
                continue
            stamp = bm.stamp_ns(msg.header)
            if stamp in self._labels:
                self.problems.append(f"{topic}: a second label image stamped {stamp} was "
                                     f"ignored")
                continue
            packed = zlib.compress(np.ascontiguousarray(labels).tobytes(), 1)
            self._labels[stamp] = (packed, labels.shape)

    def get(self, stamp: int, name: str | None) -> np.ndarray | None:
        item = self._labels.get(stamp)
        if item is None:
            return None
        self.used.add(stamp)
        packed, shape = item
        return np.frombuffer(zlib.decompress(packed), np.uint8).reshape(shape)

    def unmatched(self) -> int:
        return len(self._labels) - len(self.used)

    def __len__(self) -> int:
        return len(self._labels)


class TruthFolder(TruthSource):
    """Label PNGs in a folder, named like the frame's source image (recorded by
    ssnet-make-bag) or by its stamp: ``<ns>.png``, ``<sec>_<nsec>.png`` or ``<sec>.<nsec>.png``.
    """

    def __init__(self, folder: str | Path, fmt: str = "raw") -> None:
        super().__init__()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SSNetError(f"ground-truth folder {self.folder} is not a directory")
        self._files = {p.stem: p for p in self.folder.iterdir() if p.suffix.lower() == ".png"}
        if not self._files:
            raise SSNetError(f"ground-truth folder {self.folder} holds no PNG files")
        self._decode = label_decoder(fmt)
        self._used_files: set[str] = set()
        self.description = f"folder {self.folder} ({fmt} labels, matched by name or stamp)"

    def get(self, stamp: int, name: str | None) -> np.ndarray | None:
        for stem in ((name,) if name else ()) + stamp_names(stamp):
            path = self._files.get(stem)
            if path is not None:
                self.used.add(stamp)
                self._used_files.add(stem)
                return self._decode(path)
        return None

    def unmatched(self) -> int:
        return len(self._files) - len(self._used_files)
