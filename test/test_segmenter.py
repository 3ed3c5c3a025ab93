"""The inference core: shapes, dtypes, drivable mask, batching, resizing, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ssnet_ros.core.segmenter as segmenter_mod
from ssnet_ros import SSNetError, Segmenter


@pytest.fixture(scope="module")
def seg(ssnet_checkpoint_varied: Path) -> Segmenter:
    return Segmenter(ssnet_checkpoint_varied, device="cpu")


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_result_shapes_and_types_at_odd_size(seg: Segmenter) -> None:
    r = seg(image(37, 53))
    assert r.labels.shape == (37, 53) and r.labels.dtype == np.uint8
    assert r.drivable.shape == (37, 53) and r.drivable.dtype == bool
    assert r.confidence is not None and r.confidence.dtype == np.float32
    assert r.labels.max() < len(seg.class_names)
    assert np.all((r.confidence >= 1 / len(seg.class_names) - 1e-6) & (r.confidence <= 1))
    np.testing.assert_array_equal(r.drivable, np.isin(r.labels, seg.drivable_ids))
    assert len(np.unique(r.labels)) > 1  # the fixture model varies per pixel


def test_public_metadata(seg: Segmenter) -> None:
    assert seg.class_names[3] == "Road" and seg.drivable_ids == (3,)
    assert len(seg.palette) == 11
    assert seg.model is not None and not seg.model.training


def test_batch_equals_single_calls_and_groups_sizes(seg: Segmenter) -> None:
    images = [image(40, 60, 1), image(24, 32, 2), image(40, 60, 3)]
    batch = seg.segment_batch(images)
    for img, r in zip(images, batch):
        single = seg(img)
        assert r.labels.shape == img.shape[:2]
        # batched and single convolutions may round differently on a handful of pixels
        assert np.mean(r.labels == single.labels) > 0.999


def test_without_confidence(seg: Segmenter) -> None:
    r = seg(image(16, 16), confidence=False)
    assert r.confidence is None


def test_network_input_size_resizes_in_and_out(ssnet_checkpoint_varied: Path) -> None:
    small = Segmenter(ssnet_checkpoint_varied, device="cpu", input_size=(32, 48))
    r = small(image(75, 248))
    assert r.labels.shape == (75, 248) and r.confidence.shape == (75, 248)
    # nearest upsampling: each network pixel becomes a block of equal labels
    assert len(np.unique(r.labels[:2, :5])) <= 2


def test_drivable_classes_override(ssnet_checkpoint_varied: Path) -> None:
    s = Segmenter(ssnet_checkpoint_varied, device="cpu", drivable_classes=["Road", "Pavement"])
    assert s.drivable_ids == (3, 4)
    r = s(image(30, 30))
    np.testing.assert_array_equal(r.drivable, np.isin(r.labels, [3, 4]))
    with pytest.raises(SSNetError, match=r"drivable classes \['Runway'\]"):
        Segmenter(ssnet_checkpoint_varied, device="cpu", drivable_classes=["Runway"])


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8), [[1, 2, 3]],
])
def test_bad_images_are_refused(seg: Segmenter, bad: object) -> None:
    with pytest.raises(ValueError):
        seg(bad)  # type: ignore[arg-type]


def test_device_and_precision_errors(ssnet_checkpoint: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SSNetError, match="CUDA is not available"):
            Segmenter(ssnet_checkpoint, device="cuda")
    with pytest.raises(SSNetError, match="not supported|not a torch device"):
        Segmenter(ssnet_checkpoint, device="tpu")
    with pytest.raises(SSNetError, match="fp16 needs a CUDA device"):
        Segmenter(ssnet_checkpoint, device="cpu", precision="fp16")
    with pytest.raises(SSNetError, match="precision 'fp8'"):
        Segmenter(ssnet_checkpoint, device="cpu", precision="fp8")


def test_bf16_on_cpu_agrees_with_fp32(ssnet_checkpoint_varied: Path, seg: Segmenter) -> None:
    b = Segmenter(ssnet_checkpoint_varied, device="cpu", precision="bf16")
    img = image(48, 64, 7)
    # random weights give near-tied logits; chance agreement would be about 1 in 11
    assert np.mean(b(img).labels == seg(img).labels) > 0.7


def test_no_weights_and_no_default_says_how_to_get_them(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(segmenter_mod, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    with pytest.raises(SSNetError, match="ships no default weights.*ssnet-train"):
        Segmenter(None, device="cpu")


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SSNetError, match=r"weights file .*gone\.pt does not exist"):
        Segmenter(tmp_path / "gone.pt", device="cpu")


def test_shipped_weights_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 ssnet_checkpoint: Path) -> None:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "road_model.pt").write_bytes(ssnet_checkpoint.read_bytes())
    monkeypatch.setattr(segmenter_mod, "WEIGHTS_DIR", shipped)
    monkeypatch.chdir(tmp_path)
    assert segmenter_mod.shipped_weights() == {"road_model": shipped / "road_model.pt"}
    for name in ("road_model", "road_model.pt"):
        assert Segmenter(name, device="cpu").weights == shipped / "road_model.pt"
    # a file of that name in the working directory wins; paths are never looked up
    (tmp_path / "road_model.pt").write_bytes(b"not a checkpoint")
    assert segmenter_mod.resolve_weights("road_model.pt") == Path("road_model.pt")
    with pytest.raises(SSNetError, match=r"weights file sub/road_model\.pt does not exist"):
        Segmenter("sub/road_model.pt", device="cpu")


@pytest.mark.skipif(segmenter_mod.default_weights() is None, reason="no shipped weights")
def test_shipped_default_loads() -> None:
    s = Segmenter(device="cpu")
    validation = s.card.metrics["validation"]
    assert validation["camvid/val"]["miou"] > 0.55
    assert validation["idd_lite/holdout"]["drivable"]["iou"] > 0.8
    assert s.card.metrics["final_fit"]["validation"]["idd_lite/holdout"]["images"] == 229
    assert [d["name"] for d in s.card.training["datasets"]] == ["camvid", "idd_lite"]
    assert s.card.input_rule["max_scale"] == 1.0


def test_labels_do_not_depend_on_confidence_request(seg: Segmenter) -> None:
    img = image(40, 56, 11)
    np.testing.assert_array_equal(seg(img, confidence=True).labels,
                                  seg(img, confidence=False).labels)
