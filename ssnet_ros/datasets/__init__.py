"""Readers for road-scene segmentation datasets in their published on-disk layouts.

Every reader yields ``(rgb, labels)``: an HxWx3 uint8 RGB image and HxW uint8 class ids with
:data:`IGNORE_INDEX` (255) for void pixels, which the loss and every metric ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import SSNetError
from ..core.fileio import read_rgb
from .classes import (CAMVID_CLASSES, CAMVID_DRIVABLE, CAMVID_PALETTE, CITYSCAPES_CLASSES,
                      CITYSCAPES_DRIVABLE, CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_P2P_CLASSES,
                      CITYSCAPES_P2P_DRIVABLE, CITYSCAPES_P2P_DRIVABLE_IGNORE,
                      CITYSCAPES_P2P_IDS, CITYSCAPES_P2P_PALETTE, CITYSCAPES_P2P_TO_CAMVID,
                      CITYSCAPES_PALETTE,
                      IDD_LITE_CLASSES, IDD_LITE_DRIVABLE, IDD_LITE_PALETTE, IDD_LITE_TO_CAMVID,
                      IDD_LITE_LOOSE_TO_CAMVID,
                      IGNORE_INDEX, KITTI_ROAD_CLASSES, KITTI_ROAD_DRIVABLE, KITTI_ROAD_PALETTE)


@dataclass(frozen=True)
class DatasetInfo:
    """The label space of a dataset.

    ``world_scale`` is how large the world appears in its native frames relative to CamVid's
    480x360 frames (the focal length in pixels over CamVid's): training samples scale
    augmentation in CamVid units and divides by it, so every dataset is seen at the same range
    of object sizes. ``label_sets`` maps each class to the CamVid classes it stands for, for
    datasets trained through a set-valued (partial-label) loss; empty for CamVid itself.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    drivable_classes: tuple[str, ...]
    world_scale: float = 1.0
    label_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    drivable_ignore: tuple[str, ...] = ()
    """Classes left out when the drivable mask is scored (neither drivable nor not)."""

    def target_sets(self, model_classes: Sequence[str]) -> np.ndarray:
        """(classes x model classes) bool: the model classes each label of this dataset allows.

        Identity when the label spaces are equal; raises SSNetError when this dataset has no
        mapping onto ``model_classes``."""
        model_classes = tuple(model_classes)
        table = np.zeros((len(self.class_names), len(model_classes)), bool)
        if self.class_names == model_classes:
            table[np.arange(len(model_classes)), np.arange(len(model_classes))] = True
            return table
        if not self.label_sets:
            raise SSNetError(f"{self.name} labels ({', '.join(self.class_names)}) have no "
                             f"mapping onto the classes {', '.join(model_classes)}")
        for i, name in enumerate(self.class_names):
            for target in self.label_sets[name]:
                if target not in model_classes:
                    raise SSNetError(f"{self.name} class {name!r} maps to {target!r}, which is "
                                     f"not one of {', '.join(model_classes)}")
                table[i, model_classes.index(target)] = True
        return table


def _id_lut(mapping: dict[int, int]) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


def _holdout(names: list[Path], split: str, root: Path) -> list[Path]:
    """Deterministic split of a single training folder: every 5th image is validation."""
    if split == "all":
        return names
    if split not in ("train", "val"):
        raise SSNetError(f"split {split!r} is not one of train, val, all for {root}")
    is_val = split == "val"
    return [n for i, n in enumerate(names) if (i % 5 == 0) == is_val]


class SegmentationDataset:
    """Pairs of image and label files; subclasses find the pairs and decode the labels."""

    info: DatasetInfo

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise SSNetError(f"{self.info.name} root {self.root} is not a directory")
        self.pairs: list[tuple[Path, Path]] = self.find_pairs()
        if not self.pairs:
            raise SSNetError(f"{self.info.name} split {split!r} under {self.root} has no images")

    def find_pairs(self) -> list[tuple[Path, Path]]:
        """(image, label) paths, sorted by name."""
        raise NotImplementedError

    def decode_labels(self, path: Path) -> np.ndarray:
        """Read a label file as HxW uint8 train ids (255 = ignore)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, index: int) -> str:
        """Frame name (image file stem)."""
        return self.pairs[index][0].stem

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        labels = self.decode_labels(label_path)
        if labels.shape != image.shape[:2]:
            raise SSNetError(f"label {label_path} is {labels.shape[::-1]} but image "
                             f"{image_path} is {image.shape[1::-1]}")
        return image, labels

    @staticmethod
    def _read_gray(path: Path) -> np.ndarray:
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise SSNetError(f"cannot read label image {path}")
        if labels.ndim != 2:
            raise SSNetError(f"label image {path} has {labels.shape[2]} channels, expected 1")
        return labels.astype(np.uint8, copy=False)

    def _require_dir(self, path: Path) -> Path:
        if not path.is_dir():
            raise SSNetError(f"{self.info.name}: expected folder {path} is missing")
        return path

    def _paired(self, images: list[Path], label_of: dict[Path, Path]) -> list[tuple[Path, Path]]:
        missing = [p for p in images if not label_of[p].is_file()]
        if missing:
            raise SSNetError(f"{self.info.name}: {len(missing)} images have no label file, "
                             f"e.g. {label_of[missing[0]]}")
        return [(p, label_of[p]) for p in images]


def _holdout_sequences(sequences: list[Path], split: str, root: Path) -> list[Path]:
    """IDD-Lite's fixed hold-out: whole sequences whose folder number is a multiple of 7."""
    if split not in ("train", "holdout", "all"):
        raise SSNetError(f"split {split!r} is not one of train, holdout, all for {root}")
    if split == "all":
        return sequences
    return [s for s in sequences if (int(s.name) % 7 == 0) == (split == "holdout")]


class CamVid(SegmentationDataset):
    """SegNet's CamVid: ``{split}/*.png`` with ``{split}annot/*.png`` (class 11 = void)."""

    info = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_DRIVABLE)
    _lut = _id_lut({i: i for i in range(len(CAMVID_CLASSES))})

    def find_pairs(self) -> list[tuple[Path, Path]]:
        images = sorted(self._require_dir(self.root / self.split).glob("*.png"))
        annot = self._require_dir(self.root / f"{self.split}annot")
        return self._paired(images, {p: annot / p.name for p in images})

    def decode_labels(self, path: Path) -> np.ndarray:
        return self._lut[self._read_gray(path)]


class KittiSemantics(SegmentationDataset):
    """KITTI semantics 2015: ``training/image_2`` with ``training/semantic`` (Cityscapes ids).

    Splits: ``train`` and ``val`` hold out every 5th image (sorted by name) as validation.
    """

    info = DatasetInfo("kitti_semantics", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE,
                       CITYSCAPES_DRIVABLE)
    _lut = _id_lut(CITYSCAPES_ID_TO_TRAIN_ID)

    def find_pairs(self) -> list[tuple[Path, Path]]:
        images = sorted(self._require_dir(self.root / "training" / "image_2").glob("*.png"))
        semantic = self._require_dir(self.root / "training" / "semantic")
        images = _holdout(images, self.split, self.root)
        return self._paired(images, {p: semantic / p.name for p in images})

    def decode_labels(self, path: Path) -> np.ndarray:
        return self._lut[self._read_gray(path)]


class KittiRoad(SegmentationDataset):
    """KITTI road: ``training/image_2/um_000000.png`` with ``gt_image_2/um_road_000000.png``.

    Ground-truth colours: magenta = road (1), red = not road (0), anything else ignored.
    Splits hold out every 5th image as validation, as for KITTI semantics.
    """

    info = DatasetInfo("kitti_road", KITTI_ROAD_CLASSES, KITTI_ROAD_PALETTE, KITTI_ROAD_DRIVABLE)

    def find_pairs(self) -> list[tuple[Path, Path]]:
        images = sorted(self._require_dir(self.root / "training" / "image_2").glob("*_*.png"))
        gt = self._require_dir(self.root / "training" / "gt_image_2")
        images = _holdout(images, self.split, self.root)

        def label(p: Path) -> Path:
            prefix, number = p.stem.rsplit("_", 1)
            return gt / f"{prefix}_road_{number}.png"

        return self._paired(images, {p: label(p) for p in images})

    def decode_labels(self, path: Path) -> np.ndarray:
        rgb = read_rgb(path)
        labels = np.full(rgb.shape[:2], IGNORE_INDEX, np.uint8)
        red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0)
        labels[red & (rgb[..., 2] == 255)] = 1
        labels[red & (rgb[..., 2] == 0)] = 0
        return labels


class Cityscapes(SegmentationDataset):
    """Cityscapes: ``leftImg8bit/<split>/<city>/*`` with ``gtFine/<split>/<city>/*_labelIds``."""

    info = DatasetInfo("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CITYSCAPES_DRIVABLE)
    _lut = _id_lut(CITYSCAPES_ID_TO_TRAIN_ID)

    def find_pairs(self) -> list[tuple[Path, Path]]:
        left = self._require_dir(self.root / "leftImg8bit" / self.split)
        gt = self._require_dir(self.root / "gtFine" / self.split)
        images = sorted(left.glob("*/*_leftImg8bit.png"))
        return self._paired(images, {
            p: gt / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            for p in images})

    def decode_labels(self, path: Path) -> np.ndarray:
        return self._lut[self._read_gray(path)]


class IDDLite(SegmentationDataset):
    """IDD-Lite: ``leftImg8bit/train/<seq>/<id>_image.jpg`` with ``gtFine/.../<id>_label.png``.

    Labels are IDD's 7 level-1 classes (255 ignored). The published val split is held back, so
    the splits divide the train folder by whole sequences: ``holdout`` is every sequence whose
    number is a multiple of 7 (229 of 1,403 frames), ``train`` the rest, ``all`` both. A folder
    ``leftImg8bit/val`` (the published val split) is read as split ``val``.
    """

    info = DatasetInfo("idd_lite", IDD_LITE_CLASSES, IDD_LITE_PALETTE, IDD_LITE_DRIVABLE,
                       world_scale=320 / 480, label_sets=IDD_LITE_TO_CAMVID)
    _lut = _id_lut({i: i for i in range(len(IDD_LITE_CLASSES))})

    def find_pairs(self) -> list[tuple[Path, Path]]:
        folder = "val" if self.split == "val" else "train"
        left = self._require_dir(self.root / "leftImg8bit" / folder)
        gt = self._require_dir(self.root / "gtFine" / folder)
        sequences = sorted((p for p in left.iterdir() if p.is_dir()),
                           key=lambda p: (not p.name.isdigit(), p.name.zfill(8)))
        if self.split != "val":
            if any(not p.name.isdigit() for p in sequences):
                raise SSNetError(f"idd_lite: sequence folders under {left} must be numbers")
            sequences = _holdout_sequences(sequences, self.split, self.root)
        images = [p for seq in sequences for p in sorted(seq.glob("*_image.jpg"))]
        return self._paired(images, {
            p: gt / p.parent.name / p.name.replace("_image.jpg", "_label.png") for p in images})

    def decode_labels(self, path: Path) -> np.ndarray:
        return self._lut[self._read_gray(path)]


class IDDLiteLoose(IDDLite):
    """IDD-Lite (the same files and splits) with its "drivable" class allowing Road or Pavement
    in training (``IDD_LITE_LOOSE_TO_CAMVID``); scored as IDD-Lite is."""

    info = dataclasses.replace(IDDLite.info, name="idd_lite_loose",
                               label_sets=IDD_LITE_LOOSE_TO_CAMVID)


#: Whole cities of the cityscapes_p2p numbering held out for validation (frame ranges, both
#: ends included): Weimar and Zürich.
CITYSCAPES_P2P_HOLDOUT = ((2712, 2853), (2854, 2975))


class CityscapesP2P(SegmentationDataset):
    """Cityscapes train at 256x256, squeezed 2:1 (the pix2pix edition): restored to 512x256.

    ``leftImg8bit/train/p2p/p2p_NNNNNN_000019_leftImg8bit.jpg`` with
    ``gtFine/train/p2p/p2p_NNNNNN_000019_gtFine_labelIds.png`` (Cityscapes label ids, 0 =
    ignore). Images are resized to 512x256 (area-preserving bilinear), labels nearest, so the
    world has its true aspect ratio again. Splits: ``holdout`` is the whole cities of
    :data:`CITYSCAPES_P2P_HOLDOUT` (Weimar, Zürich), ``train`` the other 16, ``all`` both.
    """

    info = DatasetInfo("cityscapes_p2p", CITYSCAPES_P2P_CLASSES, CITYSCAPES_P2P_PALETTE,
                       CITYSCAPES_P2P_DRIVABLE, world_scale=512 / 480,
                       label_sets=CITYSCAPES_P2P_TO_CAMVID,
                       drivable_ignore=CITYSCAPES_P2P_DRIVABLE_IGNORE)
    size = (512, 256)
    _lut = _id_lut({cid: i for i, cid in enumerate(CITYSCAPES_P2P_IDS)})

    @staticmethod
    def frame_number(path: Path) -> int:
        """The frame's number in the original train list (``p2p_000123_...`` -> 123)."""
        return int(path.name.split("_")[1])

    def find_pairs(self) -> list[tuple[Path, Path]]:
        if self.split not in ("train", "holdout", "all"):
            raise SSNetError(f"split {self.split!r} is not one of train, holdout, all for "
                             f"{self.root}")
        left = self._require_dir(self.root / "leftImg8bit" / "train" / "p2p")
        gt = self._require_dir(self.root / "gtFine" / "train" / "p2p")
        images = sorted(left.glob("p2p_*_leftImg8bit.jpg"))
        if self.split != "all":
            held = [any(lo <= self.frame_number(p) <= hi for lo, hi in CITYSCAPES_P2P_HOLDOUT)
                    for p in images]
            images = [p for p, h in zip(images, held) if h == (self.split == "holdout")]
        return self._paired(images, {
            p: gt / p.name.replace("_leftImg8bit.jpg", "_gtFine_labelIds.png") for p in images})

    def decode_labels(self, path: Path) -> np.ndarray:
        labels = self._lut[self._read_gray(path)]
        return cv2.resize(labels, self.size, interpolation=cv2.INTER_NEAREST)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = cv2.resize(read_rgb(image_path), self.size, interpolation=cv2.INTER_LINEAR)
        return image, self.decode_labels(label_path)


DATASETS: dict[str, type[SegmentationDataset]] = {
    cls.info.name: cls
    for cls in (CamVid, KittiSemantics, KittiRoad, Cityscapes, CityscapesP2P, IDDLite,
                IDDLiteLoose)}


def open_dataset(name: str, root: str | Path, split: str) -> SegmentationDataset:
    """Open dataset ``name`` (camvid, kitti_semantics, kitti_road, cityscapes, cityscapes_p2p,
    idd_lite, idd_lite_loose).

    ``split`` may join several splits with ``+`` (e.g. ``train+val``)."""
    if name not in DATASETS:
        raise SSNetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    parts = split.split("+")
    first = DATASETS[name](root, parts[0])
    for part in parts[1:]:
        first.pairs += DATASETS[name](root, part).pairs
    first.split = split
    return first


__all__ = ["DATASETS", "IGNORE_INDEX", "CamVid", "Cityscapes", "CityscapesP2P", "DatasetInfo",
           "IDDLite", "IDDLiteLoose",
           "KittiRoad",
           "KittiSemantics", "SegmentationDataset", "open_dataset"]
