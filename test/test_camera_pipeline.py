"""Several cameras through one shared Segmenter (ssnet_ros.core.camera_pipeline): each camera's
focal length for its own frames, no cache reset between batches, and the same arrays as the
Segmenter gives directly, on real KITTI frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ssnet_ros.core.camera_pipeline import Calibration, CameraPipeline, Frame, Pipeline
from ssnet_ros.core.fileio import read_rgb
from ssnet_ros.core.ground_grid import Camera, GridSpec, fuse_lookups, grid_lookup, sample_grid
from ssnet_ros.core.render import OUTPUT_KEYS
from ssnet_ros.core.segmenter import Segmenter

KITTI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kitti_road_testing"
SIZE = (188, 621)  # KITTI frames at half size: the test stays fast on two CPU cores
GRID = GridSpec(resolution=0.5, x_range=(0.0, 30.0), y_range=(-10.0, 10.0))
# two cameras with different focal lengths: the automatic rule gives each its own network size
LEFT = Calibration((840.0, 0.0, 310.0, 0.0, 840.0, 86.0, 0.0, 0.0, 1.0), SIZE[1], SIZE[0])
RIGHT = Calibration((1400.0, 0.0, 310.0, 0.0, 1400.0, 86.0, 0.0, 0.0, 1.0), SIZE[1], SIZE[0])
POSE = (0.0, 0.0, 1.65, 0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    paths = sorted(KITTI.glob("*.png"))[:2]
    if len(paths) < 2:
        pytest.skip(f"KITTI frames not present at {KITTI} (see shared/data/README.md)")
    return [cv2.resize(read_rgb(p), SIZE[::-1], interpolation=cv2.INTER_AREA) for p in paths]


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    seg = Segmenter(None, device="cpu", precision="fp32")  # the shipped SSNet and its rule
    assert seg.card.input_rule
    return seg


def test_two_focal_lengths_share_one_segmenter_without_a_cache_reset(
        segmenter: Segmenter, frames: list[np.ndarray]) -> None:
    left, right = CameraPipeline("left", POSE), CameraPipeline("right", POSE)
    left.set_calibration(LEFT)
    right.set_calibration(RIGHT)
    assert left.network_size(segmenter, *SIZE) != right.network_size(segmenter, *SIZE)
    pipeline = Pipeline(segmenter, GRID)
    batches = [[Frame(left, frames[0], 1), Frame(right, frames[0], 2)],
               [Frame(left, frames[1], 3)],
               [Frame(right, frames[1], 4), Frame(left, frames[1], 5)]]
    resets = segmenter.cache_resets
    got = [pipeline.run(b, OUTPUT_KEYS, overlay_alpha=0.4, grid=True) for b in batches]
    assert segmenter.cache_resets == resets  # no camera disturbed another's graphs
    assert segmenter.focal_px is None  # the shared model's own state is untouched

    # the same arrays as the Segmenter gives directly (with the same batches per focal length)
    for batch, result in zip(batches, got):
        for frame, out in zip(batch, result.outputs):
            segmenter.set_focal_length(frame.camera.focal_px)
            direct = segmenter.render_batch([frame.rgb], OUTPUT_KEYS, overlay_alpha=0.4)[0]
            assert set(out) == set(OUTPUT_KEYS)
            for key in OUTPUT_KEYS:
                np.testing.assert_array_equal(out[key], direct[key], err_msg=key)
    # setting the focal length before each batch (the node's way) resets nothing either: the
    # graph key holds the network size, not the focal length
    assert segmenter.cache_resets == resets
    segmenter.set_focal_length(None)
    from ssnet_ros.core.drivable import DrivableRule  # the counter is live: a floor switched
    segmenter.set_drivable_rule(DrivableRule(0.5))   # on changes the captured work
    assert segmenter.cache_resets == resets + 1
    segmenter.set_drivable_rule(DrivableRule())

    # the fused grid is the nearest-camera fusion of each camera's own lookup
    lookups = [grid_lookup(Camera(c.k, c.width, c.height, POSE), GRID, SIZE)
               for c in (LEFT, RIGHT)]
    masks = [out["drivable_mask"] > 0 for out in got[0].outputs]
    np.testing.assert_array_equal(got[0].grid, sample_grid(fuse_lookups(lookups), *masks))
    assert got[0].grid_stamp_ns == 2 and got[0].grid_cameras == [left, right]
    assert (got[1].grid == sample_grid(lookups[0], got[1].outputs[0]["drivable_mask"] > 0)).all()
    assert (got[1].grid >= 0).any() and (got[1].grid == -1).any()


def test_a_camera_keeps_its_own_lookup_and_size_decision(segmenter: Segmenter) -> None:
    cam = CameraPipeline("front", POSE)
    assert cam.lookup(GRID, SIZE) is None  # no camera_info yet: no grid
    assert cam.network_size(segmenter, *SIZE) == segmenter.network_size(*SIZE, None)
    cam.set_calibration(LEFT)
    first = cam.lookup(GRID, SIZE)
    assert first is not None and cam.lookup(GRID, SIZE) is first  # made once
    assert cam.lookup(GRID, (SIZE[0] // 2, SIZE[1] // 2)) is not first
    cam.set_calibration(Calibration((0.0,) * 9, SIZE[1], SIZE[0]))  # unusable: none
    assert cam.calibration is None and cam.focal_px is None
    problem = cam.set_calibration(Calibration((840.0, 0, 310, 0, -1.0, 86, 0, 0, 1), *SIZE[::-1]))
    assert problem and "must be positive" in problem and cam.calibration_problem == problem
    assert cam.lookup(GRID, SIZE) is None  # the calibration's problem says why
    cam.set_calibration(LEFT)  # a pose that sees no cell of the grid: the lookup's problem
    assert cam.lookup(GRID, SIZE, pose=(0.0, 0.0, 1.65, 0.0, 0.0, 3.14)) is None
    assert "sees no cell" in (cam.grid_problem or "")
    assert cam.lookup(GRID, SIZE) is not None and cam.grid_problem is None
