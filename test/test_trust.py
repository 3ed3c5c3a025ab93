"""The drivable trust: its scores, its fit, the card entry, and the shipped model on real
frames (deterministic, cheap next to the network, lower on degraded or unseen frames)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssnet_ros.core.checkpoint import read_card
from ssnet_ros.core.segmenter import Segmenter, default_weights
from ssnet_ros.core.trust import (FEATURES, TrustModel, auroc, fit_trust, r_squared, spearman,
                                  trust_features, trust_scores)
from ssnet_ros.errors import SSNetError
from ssnet_ros.training.fit_trust import degrade, pick, write_checkpoint

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_scores_are_the_textbook_ones() -> None:
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 1, 2], [3, 3, 5]) == pytest.approx(1.0)  # ties averaged
    assert spearman([1, 2], [1, 2]) is None
    # 3 positives x 2 negatives: one pair wrongly ordered, one tied -> (4 + 0.5) / 6
    assert auroc([0.9, 0.8, 0.3, 0.5, 0.3], [True, True, True, False, False]) == \
        pytest.approx(4.5 / 6)
    assert auroc([1, 2], [True, True]) is None
    assert r_squared([1, 2, 3], [1, 2, 3]) == 1.0
    s = trust_scores([0.9, 0.8, 0.2, 0.3], [0.95, 0.9, 0.4, 0.6])
    assert s["auroc_iou_below_70"] == 1.0 and s["frames_iou_below_70"] == 2


def test_the_fit_recovers_a_relation_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, len(FEATURES)))
    iou = 1 / (1 + np.exp(-(1.5 * x[:, 2] - 0.8 * x[:, 10] + 0.5)))
    model = fit_trust(x, iou, info={"what": "synthetic"})
    again = TrustModel.from_dict(model.to_dict())
    test = rng.normal(size=(40, len(FEATURES)))
    truth = 1 / (1 + np.exp(-(1.5 * test[:, 2] - 0.8 * test[:, 10] + 0.5)))
    assert spearman(again.predict(test), truth) > 0.97
    np.testing.assert_array_equal(again.predict(test), model.predict(test))
    assert again.info["what"] == "synthetic" and again.residual_std < 0.05
    with pytest.raises(SSNetError, match="at least 8 frames"):
        fit_trust(x[:5], iou[:5])
    with pytest.raises(SSNetError, match="unknown features"):
        TrustModel.from_dict({**model.to_dict(), "features": ["nope"] * len(FEATURES)})


def test_cards_without_trust_still_load(ssnet_checkpoint: Path, tmp_path: Path) -> None:
    """An old card (no trust entry) loads: drivable_trust None, the features still there;
    a card with a broken trust entry is refused with one sentence; writing refuses to
    overwrite without overwrite=True."""
    seg = Segmenter(ssnet_checkpoint, device="cpu")
    assert seg.card.trust == {} and seg.trust_model is None
    result = seg(np.zeros((24, 32, 3), np.uint8))
    assert result.drivable_trust is None and result.trust_features.shape == (len(FEATURES),)
    rendered = seg.render_batch([np.zeros((24, 32, 3), np.uint8)], ["labels"], trust=True)[0]
    assert "drivable_trust" not in rendered and rendered["trust_features"].shape == (16,)
    with pytest.raises(SSNetError, match="exists; pass --overwrite"):
        write_checkpoint(ssnet_checkpoint, ssnet_checkpoint, {}, overwrite=False)
    broken = tmp_path / "broken.pt"
    with pytest.raises(SSNetError, match="refusing to write .*trust model is malformed"):
        write_checkpoint(ssnet_checkpoint, broken, {"version": 1, "link": "logit"}, False)
    assert not broken.exists()
    import torch  # a file written by something else: the card is refused when read

    payload = torch.load(ssnet_checkpoint, weights_only=True)
    payload["card"]["trust"] = {"version": 1, "link": "logit"}
    torch.save(payload, broken)
    with pytest.raises(SSNetError, match="trust model is malformed"):
        read_card(broken)


def test_the_device_path_packs_the_same_features(ssnet_checkpoint_varied: Path) -> None:
    """render_packed (the CUDA path, run here on the CPU) carries the same trust features
    as the host path, next to the same drivable mask."""
    from ssnet_ros.core.render import TRUST_KEY, DeviceTables, render_packed, unpack

    seg = Segmenter(ssnet_checkpoint_varied, device="cpu")
    image = np.random.default_rng(1).integers(0, 255, (40, 56, 3), np.uint8)
    host = seg.render_batch([image], ["drivable_mask"], trust=True)[0]
    tables = DeviceTables(seg.card.mean, seg.card.std, seg._palette, seg.drivable_ids,
                          torch.device("cpu"))
    packed = render_packed(seg.model, torch.from_numpy(image[None]),
                           (TRUST_KEY, "drivable_mask"), tables, dtype=torch.float32,
                           channels_last=False, input_size=None)
    out = unpack(packed.numpy(), 40, 56, (TRUST_KEY, "drivable_mask"), len(FEATURES))[0]
    np.testing.assert_allclose(out[TRUST_KEY], host["trust_features"], atol=1e-6)
    np.testing.assert_array_equal(out["drivable_mask"], host["drivable_mask"])


def test_degradations_are_deterministic() -> None:
    image = np.random.default_rng(2).integers(0, 255, (20, 30, 3), np.uint8)
    for kind in ("blur", "overexposed", "dark", "haze"):
        np.testing.assert_array_equal(degrade(image, kind, 7), degrade(image, kind, 7))
    assert pick(10, 4) == [0, 3, 6, 9] and pick(3, 8) == [0, 1, 2]


@pytest.fixture(scope="module")
def shipped() -> Segmenter:
    weights = default_weights()
    if weights is None or not read_card(weights).trust:
        pytest.fail("the shipped checkpoint carries no trust model (ssnet-fit-trust, "
                    "docs/trust.md)")
    return Segmenter(weights, device="cpu")


def _frame(dataset: str, split: str, name: str) -> tuple[np.ndarray, int]:
    """A real frame of ``dataset`` by name, with its index in the split."""
    from ssnet_ros.datasets import open_dataset

    root = SHARED / dataset
    if not root.is_dir():
        pytest.skip(f"real {dataset} data not present at {root} (see shared/data/README.md)")
    data = open_dataset(dataset, root, split)
    index = [data.name(i) for i in range(len(data))].index(name)
    return data[index][0], index


def test_shipped_trust_is_deterministic_cheap_and_falls_on_degraded_frames(
        shipped: Segmenter) -> None:
    """On a real IDD-Lite hold-out frame: the same trust from __call__ and render_batch; the
    features cost a small part of the network's time (measured in one run); heavy blur and
    strong over-exposure (true drivable IoU 0.87 -> 0.62 and 0.64 when fitted) lower the
    trust well below the clean frame's."""
    image, index = _frame("idd_lite", "holdout", "104856_image")
    clean = shipped(image, confidence=False)
    rendered = shipped.render_batch([image], ["drivable_mask"], trust=True)[0]
    assert float(rendered["drivable_trust"]) == clean.drivable_trust
    batch = torch.from_numpy(image[None])
    t0 = time.perf_counter()
    logits, _ = shipped.logits(batch)
    network = time.perf_counter() - t0
    t1 = time.perf_counter()
    trust_features(logits, shipped._drivable_lut)
    features = time.perf_counter() - t1
    assert features < 0.2 * network, (features, network)
    assert clean.drivable_trust > 0.7
    for kind in ("blur", "overexposed"):
        worse = shipped(degrade(image, kind, index), confidence=False).drivable_trust
        assert worse < clean.drivable_trust - 0.15, (kind, worse, clean.drivable_trust)
