"""Drawing helpers: palette lookup, blending, confidence and mask images, panels."""

from __future__ import annotations

import numpy as np
import pytest

from ssnet_ros.errors import SSNetError

from ssnet_ros.datasets.classes import CAMVID_PALETTE
from ssnet_ros.core.visualize import colorize, confidence_to_mono8, mask_to_mono8, overlay, \
    palette_lut, truth_panel

RNG = np.random.default_rng(1)


def test_colorize_maps_each_label_to_its_palette_colour() -> None:
    labels = RNG.integers(0, len(CAMVID_PALETTE), (6, 9), dtype=np.uint8)
    color = colorize(labels, CAMVID_PALETTE)
    assert color.shape == (6, 9, 3) and color.dtype == np.uint8
    for y, x in np.ndindex(labels.shape):
        assert tuple(color[y, x]) == CAMVID_PALETTE[labels[y, x]]
    np.testing.assert_array_equal(colorize(labels, palette_lut(CAMVID_PALETTE)), color)


def test_labels_past_the_palette_are_black() -> None:
    assert colorize(np.array([[200]], np.uint8), CAMVID_PALETTE).tolist() == [[[0, 0, 0]]]


@pytest.mark.parametrize("palette", [[(0, 0, 256)], [(-1, 0, 0)], [(1, 2, 3)] * 257])
def test_bad_palettes_are_refused(palette: list) -> None:
    with pytest.raises(ValueError):
        palette_lut(palette)


def test_colorize_refuses_non_uint8_labels() -> None:
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2), np.int64), CAMVID_PALETTE)


def test_overlay_blends_by_alpha() -> None:
    rgb = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    color = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(overlay(rgb, color, 0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, color, 1.0), color)
    half = overlay(rgb, color, 0.5)
    exact = (rgb.astype(float) + color) / 2
    assert np.abs(half - exact).max() <= 0.5 + 1e-9
    quarter = overlay(rgb, color, 0.25)
    assert np.abs(quarter - (0.75 * rgb + 0.25 * color)).max() <= 1.0


def test_overlay_refuses_mismatched_images_and_alpha() -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError):
        overlay(rgb, np.zeros((4, 6, 3), np.uint8), 0.5)
    with pytest.raises(SSNetError, match="overlay alpha 1.5 is outside 0..1"):
        overlay(rgb, rgb, 1.5)  # the one alpha check (alpha_weight), as the node's


def test_confidence_to_mono8_rounds_and_clips() -> None:
    conf = np.array([[0.0, 0.5, 1.0, 1.2, -0.1, 1 / 255]], np.float32)
    assert confidence_to_mono8(conf).tolist() == [[0, 128, 255, 255, 0, 1]]


def test_mask_to_mono8() -> None:
    mask = np.array([[True, False], [False, True]])
    assert mask_to_mono8(mask).tolist() == [[255, 0], [0, 255]]
    assert mask_to_mono8(mask.astype(np.uint8)).tolist() == [[255, 0], [0, 255]]


def test_truth_panel_draws_input_prediction_and_truth_with_void_black() -> None:
    image = np.full((4, 5, 3), 100, np.uint8)
    labels = np.zeros((4, 5), np.uint8)
    truth = np.full((4, 5), 255, np.uint8)  # all void
    truth[0, 0] = 3
    pic = truth_panel(image, labels, truth, CAMVID_PALETTE, caption="x", max_width=15)
    row = pic[-4:]  # the caption band is above the row
    assert pic.shape[1] == 15 and row[:, :5].tolist() == image.tolist()
    assert row[0, 10].tolist() == list(CAMVID_PALETTE[3]) and row[1, 12].tolist() == [0, 0, 0]


def test_legend_shows_every_class_colour_and_wraps() -> None:
    from ssnet_ros.core.visualize import legend

    names = [f"class {i}" for i in range(11)]
    colors = [(20 * i, 255 - 20 * i, 7 * i) for i in range(11)]
    strip = legend(names, colors, 400)
    assert strip.shape[1] == 400 and strip.shape[0] > 30  # more than one row at 400 px
    pixels = {tuple(p) for p in strip.reshape(-1, 3)}
    assert all(tuple(c) in pixels for c in colors)
    assert legend(names, colors, 4000).shape[0] < strip.shape[0]


def test_panel_tints_the_drivable_mask_and_fits_a_laptop() -> None:
    from ssnet_ros.core.visualize import DRIVABLE_TINT, panel, tint

    rgb = np.full((375, 1242, 3), 100, np.uint8)
    mask = np.zeros((375, 1242), bool)
    mask[200:, 400:800] = True
    out = panel(rgb, rgb, mask, ["Road"], [(128, 64, 128)], title="frame")
    assert out.shape[1] == 960 and out.shape[0] < 800
    tinted = tint(rgb, mask)
    assert (tinted[mask] != 100).all() and (tinted[~mask] == 100).all()
    assert tuple(DRIVABLE_TINT) in {tuple(p) for p in out[-40:].reshape(-1, 3)}
