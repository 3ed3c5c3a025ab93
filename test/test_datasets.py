"""Dataset readers on fixtures written in each published on-disk layout, and real CamVid."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import NO_SHARED_DATA

from ssnet_ros import SSNetError
from ssnet_ros.datasets import IGNORE_INDEX, open_dataset
from ssnet_ros.datasets.classes import CAMVID_CLASSES


def test_camvid_fixture(camvid_fixture: Path) -> None:
    ds = open_dataset("camvid", camvid_fixture, "train")
    assert len(ds) == 3 and ds.name(0) == "0001TP_000000"
    image, labels = ds[0]
    assert image.shape == (48, 64, 3) and labels.shape == (48, 64)
    assert set(np.unique(labels)) == {0, 3, 8, IGNORE_INDEX}  # void 11 -> ignore


def test_camvid_real(camvid_root: Path) -> None:
    train, val = open_dataset("camvid", camvid_root, "train"), open_dataset("camvid",
                                                                            camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    image, labels = val[0]
    assert image.shape == (360, 480, 3) and labels.shape == (360, 480)
    assert labels.max() == IGNORE_INDEX or labels.max() <= 10
    assert 3 in labels  # road


def test_kitti_semantics_layout(tmp_path: Path) -> None:
    img_dir, sem_dir = tmp_path / "training" / "image_2", tmp_path / "training" / "semantic"
    img_dir.mkdir(parents=True)
    sem_dir.mkdir(parents=True)
    ids = np.array([[7, 8, 11], [26, 0, 23]], np.uint8)  # road sidewalk building / car void sky
    for i in range(10):
        cv2.imwrite(str(img_dir / f"{i:06d}_10.png"), np.zeros((2, 3, 3), np.uint8))
        cv2.imwrite(str(sem_dir / f"{i:06d}_10.png"), ids)
    train = open_dataset("kitti_semantics", tmp_path, "train")
    val = open_dataset("kitti_semantics", tmp_path, "val")
    assert (len(train), len(val)) == (8, 2)
    assert {val.name(i) for i in range(2)} == {"000000_10", "000005_10"}
    _, labels = val[0]
    np.testing.assert_array_equal(labels, [[0, 1, 2], [13, IGNORE_INDEX, 10]])
    assert val.info.class_names[13] == "car"


def test_kitti_road_layout(tmp_path: Path) -> None:
    img_dir, gt_dir = tmp_path / "training" / "image_2", tmp_path / "training" / "gt_image_2"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    gt_rgb = np.array([[[255, 0, 255], [255, 0, 0], [0, 0, 0]]], np.uint8)
    for prefix in ("um", "uu"):
        for i in range(3):
            cv2.imwrite(str(img_dir / f"{prefix}_{i:06d}.png"), np.zeros((1, 3, 3), np.uint8))
            cv2.imwrite(str(gt_dir / f"{prefix}_road_{i:06d}.png"),
                        cv2.cvtColor(gt_rgb, cv2.COLOR_RGB2BGR))
    ds = open_dataset("kitti_road", tmp_path, "all")
    assert len(ds) == 6
    _, labels = ds[0]
    np.testing.assert_array_equal(labels, [[1, 0, IGNORE_INDEX]])
    assert ds.info.drivable_classes == ("road",)


def test_cityscapes_layout(tmp_path: Path) -> None:
    left = tmp_path / "leftImg8bit" / "val" / "lindau"
    gt = tmp_path / "gtFine" / "val" / "lindau"
    left.mkdir(parents=True)
    gt.mkdir(parents=True)
    cv2.imwrite(str(left / "lindau_000000_000019_leftImg8bit.png"), np.zeros((2, 2, 3), np.uint8))
    cv2.imwrite(str(gt / "lindau_000000_000019_gtFine_labelIds.png"),
                np.array([[7, 24], [33, 1]], np.uint8))
    ds = open_dataset("cityscapes", tmp_path, "val")
    _, labels = ds[0]
    np.testing.assert_array_equal(labels, [[0, 11], [18, IGNORE_INDEX]])


def test_errors_name_the_problem(tmp_path: Path, camvid_fixture: Path) -> None:
    with pytest.raises(SSNetError, match="unknown dataset 'mapillary'"):
        open_dataset("mapillary", tmp_path, "train")
    with pytest.raises(SSNetError, match="is not a directory"):
        open_dataset("camvid", tmp_path / "nothing", "train")
    with pytest.raises(SSNetError, match="expected folder .*test is missing"):
        open_dataset("camvid", camvid_fixture, "test")
    (camvid_fixture / "valannot" / "0001TP_000001.png").unlink()
    with pytest.raises(SSNetError, match="1 images have no label file"):
        open_dataset("camvid", camvid_fixture, "val")


IDD_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "idd_lite"


@pytest.mark.skipif(not IDD_ROOT.is_dir(),
                    reason=f"needs ../shared/data/idd_lite: {NO_SHARED_DATA}")
def test_idd_lite_real_holdout_is_whole_sequences() -> None:
    train, hold = open_dataset("idd_lite", IDD_ROOT, "train"), open_dataset("idd_lite",
                                                                            IDD_ROOT, "holdout")
    assert (len(train), len(hold)) == (1174, 229)
    seqs = {p.parent.name for p, _ in hold.pairs}
    assert all(int(s) % 7 == 0 for s in seqs)
    assert not seqs & {p.parent.name for p, _ in train.pairs}
    image, labels = hold[0]
    assert image.shape == (227, 320, 3) and labels.shape == (227, 320)
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5, 6, IGNORE_INDEX}
    assert len(open_dataset("idd_lite", IDD_ROOT, "train+holdout")) == 1403


def test_idd_lite_layout_and_bad_split(tmp_path: Path) -> None:
    for seq in ("0", "3", "14"):
        (tmp_path / "leftImg8bit" / "train" / seq).mkdir(parents=True)
        (tmp_path / "gtFine" / "train" / seq).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "leftImg8bit" / "train" / seq / "a_image.jpg"),
                    np.zeros((2, 3, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "gtFine" / "train" / seq / "a_label.png"),
                    np.array([[0, 6, 255], [1, 2, 9]], np.uint8))
    hold = open_dataset("idd_lite", tmp_path, "holdout")
    assert [p.parent.name for p, _ in hold.pairs] == ["0", "14"]
    _, labels = hold[0]
    np.testing.assert_array_equal(labels, [[0, 6, IGNORE_INDEX], [1, 2, IGNORE_INDEX]])
    with pytest.raises(SSNetError, match="split 'test' is not one of train, holdout, all"):
        open_dataset("idd_lite", tmp_path, "test")
    # the looser reading: the same frames and labels; "drivable" allows Road or Pavement
    loose = open_dataset("idd_lite_loose", tmp_path, "holdout")
    assert loose.pairs == hold.pairs and (loose[0][1] == labels).all()
    sets = loose.info.target_sets(CAMVID_CLASSES)
    allowed = {CAMVID_CLASSES[j] for j in np.flatnonzero(sets[0])}
    assert allowed == {"Road", "Pavement"}
    assert (sets[1:] == hold.info.target_sets(CAMVID_CLASSES)[1:]).all()
    assert loose.info.drivable_classes == hold.info.drivable_classes == ("drivable",)


def test_weights_trained_on_the_looser_reading_saw_idd_lite_frames() -> None:
    from ssnet_ros.core.checkpoint import ModelCard

    card = ModelCard("ssnet", CAMVID_CLASSES, ((0, 0, 0),) * 11, ("Road",), (0, 0, 0),
                     (1, 1, 1), (360, 480), training={"datasets": [
                         {"name": "camvid", "split": "train"},
                         {"name": "idd_lite_loose", "split": "train"}]})
    assert card.trained_on("idd_lite", "train") and card.trained_on("idd_lite_loose", "train")
    assert card.trained_on("idd_lite", "holdout") is None
    assert "IDD / IDD-Lite" in card.licence()


def _write_p2p(root: Path, numbers: list[int]) -> None:
    """cityscapes_p2p layout: squeezed 256x256 JPEG photos and label-id PNGs."""
    left, gt = root / "leftImg8bit" / "train" / "p2p", root / "gtFine" / "train" / "p2p"
    left.mkdir(parents=True)
    gt.mkdir(parents=True)
    ids = np.zeros((256, 256), np.uint8)
    ids[128:, :] = 7       # road below
    ids[128:, :32] = 8     # sidewalk on the left
    ids[:64, :] = 23       # sky on top
    ids[64:128, 200:] = 9  # parking
    for n in numbers:
        cv2.imwrite(str(left / f"p2p_{n:06d}_000019_leftImg8bit.jpg"),
                    np.full((256, 256, 3), 100, np.uint8))
        cv2.imwrite(str(gt / f"p2p_{n:06d}_000019_gtFine_labelIds.png"), ids)


def test_cityscapes_p2p_layout_unsqueeze_and_holdout(tmp_path: Path) -> None:
    _write_p2p(tmp_path, [5, 2711, 2712, 2975])
    train = open_dataset("cityscapes_p2p", tmp_path, "train")
    holdout = open_dataset("cityscapes_p2p", tmp_path, "holdout")
    assert [train.name(i)[:10] for i in range(len(train))] == ["p2p_000005", "p2p_002711"]
    assert len(holdout) == 2 and len(open_dataset("cityscapes_p2p", tmp_path, "all")) == 4
    image, labels = train[0]
    assert image.shape == (256, 512, 3) and labels.shape == (256, 512)  # true aspect again
    names = train.info.class_names
    assert names[labels[200, 100]] == "road" and names[labels[200, 10]] == "sidewalk"
    assert names[labels[10, 10]] == "sky" and labels[100, 10] == IGNORE_INDEX  # id 0
    # the sidewalk strip was 32 of 256 columns: 64 of 512 after the un-squeeze
    assert (labels[200] == names.index("sidewalk")).sum() == 64
    with pytest.raises(SSNetError, match="split 'val'"):
        open_dataset("cityscapes_p2p", tmp_path, "val")


def test_cityscapes_p2p_targets_keep_road_apart() -> None:
    from ssnet_ros.datasets import CityscapesP2P
    from ssnet_ros.datasets.classes import CAMVID_CLASSES
    info = CityscapesP2P.info
    table = info.target_sets(CAMVID_CLASSES)
    road = CAMVID_CLASSES.index("Road")
    allows_road = {info.class_names[i] for i in np.flatnonzero(table[:, road])}
    assert allows_road == {"road", "parking"}  # never sidewalk, rail track, terrain or ground
    assert info.drivable_classes == ("road",)
    assert set(info.drivable_ignore) == {"parking", "rail track"}


def test_cityscapes_p2p_real() -> None:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cityscapes_p2p"
    if not root.is_dir():
        pytest.skip(f"real Cityscapes (p2p) data not present at {root} (see "
                    f"shared/data/README.md)")
    holdout = open_dataset("cityscapes_p2p", root, "holdout")
    assert len(holdout) == 264  # Weimar and Zürich
    image, labels = holdout[0]
    assert image.shape == (256, 512, 3) and labels.shape == (256, 512)
    assert holdout.info.class_names.index("road") in labels
