"""The automatic network input size: the world at the trained scale for any camera."""

from __future__ import annotations

import numpy as np
import pytest

from ssnet_ros import Segmenter
from ssnet_ros.core.checkpoint import read_card
from ssnet_ros.core.input_size import DEFAULT_RULE, auto_input_size, auto_scale, rule_problems


def test_camvid_frames_run_at_their_own_size() -> None:
    assert auto_input_size(DEFAULT_RULE, 360, 480) is None


def test_car_cameras_are_scaled_to_camvid_pixel_count() -> None:
    h, w = auto_input_size(DEFAULT_RULE, 375, 1242)
    assert (h, w) == (232, 760)  # KITTI: 0.61x; multiples of 8
    h, w = auto_input_size(DEFAULT_RULE, 1024, 2048)
    assert h * w == pytest.approx(480 * 360, rel=0.05) and abs(w - 2 * h) <= 8
    assert auto_input_size(DEFAULT_RULE, 227, 320) is None  # smaller frames: never enlarged


def test_focal_length_sets_the_scale_when_known() -> None:
    assert auto_scale(DEFAULT_RULE, 375, 1242, focal_px=721.5377) == pytest.approx(420 / 721.5377)
    assert auto_scale(DEFAULT_RULE, 375, 1242, focal_px=float("nan")) == pytest.approx(
        auto_scale(DEFAULT_RULE, 375, 1242))
    assert auto_scale(DEFAULT_RULE, 10, 10, focal_px=1e6) == DEFAULT_RULE["min_scale"]
    assert auto_scale(DEFAULT_RULE, 10, 10) == DEFAULT_RULE["max_scale"] == 1.0
    assert auto_input_size(DEFAULT_RULE, 10, 10) is None


def test_empty_rule_means_native_and_bad_rules_are_named() -> None:
    assert auto_input_size({}, 375, 1242) is None
    assert rule_problems({**DEFAULT_RULE, "min_scale": 3.0}) == [
        "input_rule min_scale exceeds max_scale"]
    assert "lacks" in rule_problems({"multiple": 8})[0]
    assert rule_problems({**DEFAULT_RULE, "multiple": float("nan")})


def test_segmenter_applies_the_rule_and_overrides_win() -> None:
    seg = Segmenter(None, device="cpu")
    if not seg.card.input_rule:
        pytest.skip("the shipped weights predate the input-size rule")
    assert seg.network_size(375, 1242) == (232, 760)
    seg.focal_px = 721.5377
    assert seg.network_size(375, 1242) == auto_input_size(seg.card.input_rule, 375, 1242,
                                                          721.5377)
    fixed = Segmenter(None, device="cpu", input_size=(96, 128))
    assert fixed.network_size(375, 1242) == (96, 128)
    native = Segmenter(None, device="cpu", input_size="native")
    assert native.network_size(375, 1242) is None
    out = fixed(np.zeros((375, 1242, 3), np.uint8))
    assert out.labels.shape == (375, 1242)


def test_flip_averaging_is_symmetric() -> None:
    seg = Segmenter(None, device="cpu", input_size=(64, 96), flip=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    a = seg(image).labels
    b = seg(np.ascontiguousarray(image[:, ::-1])).labels
    assert (a == b[:, ::-1]).mean() > 0.999


def test_shipped_card_is_consistent() -> None:
    card = read_card(Segmenter(None, device="cpu").weights)
    assert card.problems() == []


def test_cpu_frames_are_resized_before_they_are_normalised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12 MP frame must not be turned into floats at full size for a small network."""
    import ssnet_ros.core.segmenter as core

    seen = []
    original = core.normalize

    def spy(batch, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(tuple(batch.shape))
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(core, "normalize", spy)
    seg = Segmenter(None, device="cpu", input_size=(96, 128))
    out = seg(np.zeros((3000, 4096, 3), np.uint8), confidence=False)
    assert seen == [(1, 96, 128, 3)] and out.labels.shape == (3000, 4096)


def test_network_inputs_beyond_memory_are_refused_with_the_reason() -> None:
    from ssnet_ros.core.input_size import BYTES_PER_INPUT_PIXEL, device_memory, \
        input_size_problem

    problem = input_size_problem(16384, 16384)
    assert problem and "16384x16384" in problem and "about 400.0 GiB" in problem
    assert "larger than the largest accepted image" in problem
    assert input_size_problem(360, 480) is None
    memory = device_memory("cpu")
    assert memory and memory > 2**30
    side = int((memory / BYTES_PER_INPUT_PIXEL) ** 0.5) + 1  # over half of this machine
    if side * side <= 4096 * 4096:
        assert "GiB of cpu memory here" in input_size_problem(side, side)


def test_the_node_parameters_refuse_a_size_that_cannot_run() -> None:
    pytest.importorskip("rclpy")
    from ssnet_ros.errors import SSNetError
    from ssnet_ros.ros.parameters import PARAMETERS, validate

    values = {spec.name: spec.default for spec in PARAMETERS}
    with pytest.raises(SSNetError, match="parameters input_height and input_width: a network "
                                         "input of 16384x16384"):
        validate({**values, "device": "cpu", "input_height": 16384, "input_width": 16384})
    with pytest.raises(SSNetError, match="camera_pose z is 0 m"):
        validate({**values, "device": "cpu", "camera_pose": [0.0] * 6})
    with pytest.raises(SSNetError, match="at least 0.025 m"):
        validate({**values, "device": "cpu", "grid_resolution": 0.01})
