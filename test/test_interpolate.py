"""ssnet-interpolate: every floating-point tensor is (1 - alpha) * base + alpha * stage, the card
records it, and what cannot be mixed is refused with one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssnet_ros.core.checkpoint import load_checkpoint, save_checkpoint
from ssnet_ros.core.segmenter import default_weights, resolve_weights
from ssnet_ros.errors import SSNetError
from ssnet_ros.training.interpolate import interpolate, main


@pytest.fixture(scope="module")
def shipped() -> Path:
    weights = default_weights()
    if weights is None:
        pytest.skip("this installation ships no weights")
    return weights


def a_stage(shipped: Path, path: Path, **training: object) -> Path:
    """The shipped weights with every floating-point tensor moved by +0.5 (exact in fp16 for
    the weights' magnitudes), saved as a stage would be."""
    model, card = load_checkpoint(shipped)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value += 0.5
    save_checkpoint(path, model, card.replace(training={**card.training, **training}))
    return path


def test_the_mixture_and_its_record(tmp_path: Path, shipped: Path) -> None:
    stage = a_stage(shipped, tmp_path / "stage.pt")
    out = tmp_path / "half.pt"
    assert main([str(stage), "--alpha", "0.5", "--out", str(out)]) == 0
    base_state = load_checkpoint(shipped)[0].state_dict()
    stage_state = load_checkpoint(stage)[0].state_dict()
    model, card = load_checkpoint(out)
    for key, value in model.state_dict().items():
        want = (torch.lerp(base_state[key], stage_state[key], 0.5)
                if value.is_floating_point() else stage_state[key])
        torch.testing.assert_close(value, want.half().float() if value.is_floating_point()
                                   else want, rtol=0, atol=0)
    record = card.training["interpolation"]
    assert record["alpha"] == 0.5 and record["stage"] == str(stage)
    assert record["base"] == "ssnet_camvid" and "--alpha 0.5" in record["command"]
    # alpha 0 is the base, to the last bit of fp16
    interpolate(shipped, stage, tmp_path / "zero.pt", 0.0)
    for key, value in load_checkpoint(tmp_path / "zero.pt")[0].state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, base_state[key]), key


def test_what_cannot_be_mixed_is_refused(tmp_path: Path, shipped: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    stage = a_stage(shipped, tmp_path / "stage.pt")
    out = tmp_path / "out.pt"
    out.write_bytes(b"keep me")
    assert main([str(stage), "--alpha", "0.5", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    with pytest.raises(SSNetError, match="outside 0..1"):
        interpolate(shipped, stage, tmp_path / "x.pt", 1.5)
    calibrated = a_stage(shipped, tmp_path / "cal.pt", calibration={"drivable_logit_offset": 1})
    with pytest.raises(SSNetError, match="already calibrated"):
        interpolate(shipped, calibrated, tmp_path / "x.pt", 0.5)
    other = resolve_weights("fcn8s_camvid")
    with pytest.raises(SSNetError, match="not the same network"):
        interpolate(other, stage, tmp_path / "x.pt", 0.5)
    assert not (tmp_path / "x.pt").exists()


def test_a_soup_is_the_mean_of_its_stages_and_its_card_lists_them(tmp_path: Path,
                                                                  shipped: Path) -> None:
    """Two stages (+0.5 and +1.5 from the shipped weights): at alpha 1 the soup is their mean,
    +1.0; its card keeps each stage's training record and the union of their datasets."""
    one = a_stage(shipped, tmp_path / "a" / "final.pt",
                  datasets=[{"name": "camvid", "split": "train", "mix": 0.5},
                            {"name": "idd_lite", "split": "train", "mix": 0.5}])
    model, card = load_checkpoint(one)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value += 1.0
    two = tmp_path / "b" / "final.pt"
    save_checkpoint(two, model, card.replace(training={
        **card.training, "datasets": [{"name": "camvid", "split": "train", "mix": 0.3},
                                      {"name": "cityscapes_p2p", "split": "train", "mix": 0.7}]}))
    out = tmp_path / "soup.pt"
    assert main([str(one), str(two), "--alpha", "1", "--out", str(out)]) == 0
    base_state = load_checkpoint(shipped)[0].state_dict()
    soup, soup_card = load_checkpoint(out)
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (base_state[key] + 1.0).half().float(),
                                       rtol=1e-3, atol=2e-3)
    training = soup_card.training
    assert [(d["name"], d["split"]) for d in training["datasets"]] == [
        ("camvid", "train"), ("idd_lite", "train"), ("cityscapes_p2p", "train")]
    assert all("mix" not in d for d in training["datasets"])  # a soup has no single mix
    record = training["interpolation"]
    assert record["stages"] == [str(one), str(two)] and "stage" not in record
    assert [i["training"]["datasets"][1]["name"] for i in record["ingredients"]] == [
        "idd_lite", "cityscapes_p2p"]
    assert "epoch" not in soup_card.metrics and training["init"] == card.training.get("init", "")
    # half-way: (1 - 0.5) * shipped + 0.5 * (shipped + 1.0)
    interpolate(shipped, [one, two], tmp_path / "half.pt", 0.5)
    for key, value in load_checkpoint(tmp_path / "half.pt")[0].state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (base_state[key] + 0.5).half().float(),
                                       rtol=1e-3, atol=2e-3)
    with pytest.raises(SSNetError, match="given twice"):
        interpolate(shipped, [one, one], tmp_path / "x.pt", 1.0)
    with pytest.raises(SSNetError, match="already interpolated"):
        interpolate(shipped, [one, out], tmp_path / "x.pt", 1.0)
    elsewhere = a_stage(shipped, tmp_path / "c" / "final.pt", init="another.pt")
    with pytest.raises(SSNetError, match="did not all start from the same weights"):
        interpolate(shipped, [one, elsewhere], tmp_path / "x.pt", 1.0)
    assert not (tmp_path / "x.pt").exists()
