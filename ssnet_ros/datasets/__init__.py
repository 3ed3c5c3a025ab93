"""Readers for road-scene segmentation datasets in their published on-disk layouts.

Every reader yields ``(rgb, labels)``: an HxWx3 uint8 RGB image and HxW uint8 class ids with
:data:`IGNORE_INDEX` (255) for void pixels, which the loss and every metric ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import SSNetError
from ..fileio import read_rgb
from .classes import (CAMVID_CLASSES, CAMVID_DRIVABLE, CAMVID_PALETTE, CITYSCAPES_CLASSES,
                      CITYSCAPES_DRIVABLE, CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE,
                      IGNORE_INDEX, KITTI_ROAD_CLASSES, KITTI_ROAD_DRIVABLE, KITTI_ROAD_PALETTE)


@dataclass(frozen=True)
class DatasetInfo:
    """The label space of a dataset."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    drivable_classes: tuple[str, ...]


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


DATASETS: dict[str, type[SegmentationDataset]] = {
    cls.info.name: cls for cls in (CamVid, KittiSemantics, KittiRoad, Cityscapes)}


def open_dataset(name: str, root: str | Path, split: str) -> SegmentationDataset:
    """Open dataset ``name`` (camvid, kitti_semantics, kitti_road, cityscapes) at ``root``."""
    if name not in DATASETS:
        raise SSNetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, split)


__all__ = ["DATASETS", "IGNORE_INDEX", "CamVid", "Cityscapes", "DatasetInfo", "KittiRoad",
           "KittiSemantics", "SegmentationDataset", "open_dataset"]
