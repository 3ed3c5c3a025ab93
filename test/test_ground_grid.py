"""The bird's-eye drivable grid core (no ROS): a known ground rectangle seen by a known camera
comes back in the grid; unseen cells are unknown; projection agrees with OpenCV."""

from __future__ import annotations

import math
import re

import cv2
import numpy as np
import pytest

from ssnet_ros.core.ground_grid import (FREE, OCCUPIED, UNKNOWN, Camera, GridSpec, fuse_lookups,
                                        grid_lookup, kitti_camera, pose_from_optical, project,
                                        sample_grid, to_optical)
from ssnet_ros.errors import SSNetError

GRID = GridSpec(resolution=0.1, x_range=(-5.0, 30.0), y_range=(-10.0, 10.0))
RECT = (8.0, 16.0, -2.0, 2.0)  # x_min, x_max, y_min, y_max of the drivable ground


def render_rectangle(camera: Camera, rect: tuple[float, float, float, float]) -> np.ndarray:
    """The drivable mask the camera sees: the ground rectangle's outline projected with
    cv2.projectPoints (independently of the grid code) and filled."""
    x0, x1, y0, y1 = rect
    t = np.linspace(0.0, 1.0, 400)
    outline = np.concatenate([
        np.stack([x0 + (x1 - x0) * t, np.full_like(t, y0)], 1),
        np.stack([np.full_like(t, x1), y0 + (y1 - y0) * t], 1),
        np.stack([x1 - (x1 - x0) * t, np.full_like(t, y1)], 1),
        np.stack([np.full_like(t, x0), y1 - (y1 - y0) * t], 1)])
    pts = np.concatenate([outline, np.zeros((len(outline), 1))], axis=1)
    assert (to_optical(camera, pts)[:, 2] > 0).all()
    r = camera.rotation() @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    rvec, _ = cv2.Rodrigues(r.T)
    uv, _ = cv2.projectPoints(pts, rvec, -r.T @ np.asarray(camera.pose[:3]),
                              np.asarray(camera.k).reshape(3, 3),
                              np.asarray(camera.d or (0.0,) * 5))
    mask = np.zeros((camera.height, camera.width), np.uint8)
    cv2.fillPoly(mask, [np.round(uv.reshape(-1, 2) * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def expected_cells(rect: tuple[float, float, float, float]) -> np.ndarray:
    xs, ys = GRID.centres()
    return (xs > rect[0]) & (xs < rect[1]) & (ys > rect[2]) & (ys < rect[3])


@pytest.mark.parametrize("pose", [(0.0, 0.0, 1.65, 0.0, 0.0, 0.0),
                                  (0.5, 0.3, 1.5, 0.03, 0.08, 0.05),  # rolled, pitched down
                                  (0.0, 0.0, 2.0, -0.04, -0.02, -0.1)])
def test_a_ground_rectangle_comes_back_within_a_cell(pose: tuple) -> None:
    camera = Camera(kitti_camera().k, 1242, 375, pose)
    grid = sample_grid(grid_lookup(camera, GRID), render_rectangle(camera, RECT))
    inside = expected_cells(RECT)
    known = grid != UNKNOWN
    # every known cell well inside is free, every known cell well outside is occupied
    core = expected_cells((RECT[0] + 0.15, RECT[1] - 0.15, RECT[2] + 0.15, RECT[3] - 0.15))
    outside = ~expected_cells((RECT[0] - 0.15, RECT[1] + 0.15, RECT[2] - 0.15, RECT[3] + 0.15))
    assert (grid[core & known] == FREE).all()
    assert (grid[outside & known] == OCCUPIED).all()
    assert (grid[inside & known] == FREE).mean() > 0.97
    assert known[core].mean() > 0.95  # 8-16 m ahead is seen


def test_cells_behind_above_the_horizon_and_too_far_are_unknown() -> None:
    camera = kitti_camera()
    lookup = grid_lookup(camera, GRID)
    xs, ys = GRID.centres()
    assert (lookup.index[xs < 0] == -1).all()  # behind the camera
    # level at 1.65 m, the lowest image row meets the ground 5.9 m ahead: covered from there to
    # 20 m (and a little beyond)
    assert (lookup.index[(xs > 6) & (xs < 20) & (abs(ys) < 1)] >= 0).all()
    assert (lookup.index[(xs > 1) & (xs < 5.5)] == -1).all()  # below the image
    far = grid_lookup(camera, GridSpec(0.5, (26.0, 200.0), (-1.0, 1.0)))
    assert (far.index == -1).all()  # one image row spans more than 0.5 m there
    up = Camera(camera.k, 1242, 375, (0.0, 0.0, 1.65, 0.0, -math.pi / 2 + 0.01, 0.0))
    assert (grid_lookup(up, GRID).index == -1).all()  # looking at the sky: no ground


def test_projection_agrees_with_opencv_with_distortion() -> None:
    camera = Camera((700.0, 0.0, 600.0, 0.0, 690.0, 180.0, 0.0, 0.0, 1.0), 1242, 375,
                    (0.2, -0.1, 1.6, 0.02, 0.05, -0.03), d=(-0.28, 0.07, 0.001, -0.002, 0.01))
    xs, ys = GRID.centres()
    pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
    optical = to_optical(camera, pts)
    front = optical[:, 2] > 1
    uv = project(camera, optical[front])
    r = camera.rotation() @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    rvec, _ = cv2.Rodrigues(r.T)
    ref, _ = cv2.projectPoints(pts[front], rvec, -r.T @ np.asarray(camera.pose[:3]),
                               np.asarray(camera.k).reshape(3, 3), np.asarray(camera.d))
    seen = (uv[:, 0] > 0) & (uv[:, 0] < 1242) & (uv[:, 1] > 0) & (uv[:, 1] < 375)
    np.testing.assert_allclose(uv[seen], ref.reshape(-1, 2)[seen], atol=1e-6)


def test_a_resized_image_uses_the_scaled_calibration() -> None:
    camera = kitti_camera()
    full = grid_lookup(camera, GRID)
    half = grid_lookup(camera, GRID, (188, 621))
    assert half.size == (188, 621)
    known = (full.index >= 0) & (half.index >= 0)
    u_full, v_full = full.index[known] % 1242, full.index[known] // 1242
    u_half, v_half = half.index[known] % 621, half.index[known] // 621
    assert np.abs(u_full / 2 - u_half).max() <= 1 and np.abs(v_full / 2 - v_half).max() <= 1


def test_bad_specs_are_one_sentence() -> None:
    with pytest.raises(SSNetError, match="resolution"):
        GridSpec(resolution=0.0)
    with pytest.raises(SSNetError, match="min < max"):
        GridSpec(x_range=(10.0, 5.0))
    with pytest.raises(SSNetError, match="camera_pose"):
        Camera(kitti_camera().k, 1242, 375, (0.0, 0.0, 1.0))
    with pytest.raises(SSNetError, match="mask is"):
        sample_grid(grid_lookup(kitti_camera(), GRID), np.zeros((10, 10), bool))


def test_two_cameras_fuse_into_one_grid_nearest_camera_wins() -> None:
    """Front-left and front-right cameras (0.5 m either side, yawed 0.4 rad outwards) see
    three drivable rectangles: the fused grid holds all three; where both see a cell, the
    nearer camera's view is taken; unknown only where neither sees the ground."""
    grid = GridSpec(0.1, (0.0, 30.0), (-12.0, 12.0))
    left = Camera(kitti_camera().k, 1242, 375, (0.0, 0.5, 1.65, 0.0, 0.05, 0.4))
    right = Camera(kitti_camera().k, 1242, 375, (0.0, -0.5, 1.65, 0.0, 0.05, -0.4))
    rects = [(6.0, 12.0, -1.5, 1.5), (8.0, 14.0, 3.0, 6.0), (8.0, 14.0, -6.0, -3.0)]

    def seen(camera: Camera) -> np.ndarray:
        return np.logical_or.reduce([render_rectangle(camera, r) for r in rects])

    lk_left, lk_right = grid_lookup(left, grid), grid_lookup(right, grid)
    fused = fuse_lookups([lk_left, lk_right])
    assert fused.sizes == ((375, 1242), (375, 1242))
    data = sample_grid(fused, seen(left), seen(right))
    xs, ys = grid.centres()

    def cells(m: float) -> np.ndarray:
        return np.logical_or.reduce([(xs > r[0] + m) & (xs < r[1] - m) & (ys > r[2] + m)
                                     & (ys < r[3] - m) for r in rects])

    known = data != UNKNOWN
    assert (data[cells(0.15) & known] == FREE).all()
    assert (data[cells(0.15)] == FREE).mean() > 0.9  # the rectangles are seen
    assert (data[known & ~cells(-0.15)] == OCCUPIED).all()
    # unknown exactly where neither camera sees the ground
    assert np.array_equal(~known, (lk_left.index < 0) & (lk_right.index < 0))
    # where both see a cell, the nearer camera's pixel is used
    both = (lk_left.index >= 0) & (lk_right.index >= 0)
    nearer_left = both & (lk_left.distance <= lk_right.distance)
    assert nearer_left.any() and (both & ~nearer_left).any()
    assert np.array_equal(fused.index[nearer_left], lk_left.index[nearer_left])
    far = both & ~nearer_left
    assert np.array_equal(fused.index[far], lk_right.index[far] + 375 * 1242)
    assert (ys[nearer_left] > -0.05).all() and (ys[far] < 0.05).all()
    with pytest.raises(SSNetError, match="2 cameras, got 1"):
        sample_grid(fused, seen(left))


def test_sampling_on_a_torch_device_equals_numpy() -> None:
    """The per-frame sampler runs where the mask is (torch: the GPU with CUDA; here the CPU)
    and gives the same cells as numpy."""
    torch = pytest.importorskip("torch")
    camera = kitti_camera()
    lookup = grid_lookup(camera, GRID)
    mask = render_rectangle(camera, RECT)
    expected = sample_grid(lookup, mask)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    got = sample_grid(lookup, torch.from_numpy(mask.astype(np.uint8) * 255).to(device))
    assert got.dtype == torch.int8 and got.device.type == device
    assert np.array_equal(got.cpu().numpy(), expected)


@pytest.mark.parametrize("pose", [(0.0, 0.0, 1.65, 0.0, 0.0, 0.0),
                                  (1.2, -0.4, 1.5, 0.03, 0.08, 2.5),
                                  (0.0, 0.3, 2.0, -0.2, -0.1, -1.0)])
def test_a_tf_transform_of_the_optical_frame_gives_the_body_pose(pose: tuple) -> None:
    """TF gives the image's (optical) frame in grid_frame; the body pose recovered from it
    projects every ground point to the same place."""
    camera = Camera(kitti_camera().k, 1242, 375, pose)
    r = camera.rotation() @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    rvec, _ = cv2.Rodrigues(r)
    angle = float(np.linalg.norm(rvec))
    axis = rvec.ravel() / angle if angle > 0 else np.zeros(3)
    quat = (*(axis * math.sin(angle / 2)), math.cos(angle / 2))
    got = pose_from_optical(pose[:3], quat)
    np.testing.assert_allclose(got, pose, atol=1e-9)
    with pytest.raises(SSNetError, match="finite"):
        pose_from_optical((0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0))


K_KITTI = (721.5377, 0.0, 609.5593, 0.0, 721.5377, 172.854, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("k, size, d, model, reason", [
    ((0.0,) * 9, (1242, 375), (), "plumb_bob", "fx 0 and fy 0"),
    ((float("nan"),) + K_KITTI[1:], (1242, 375), (), "plumb_bob", "9 finite"),
    ((float("inf"),) + K_KITTI[1:], (1242, 375), (), "plumb_bob", "9 finite"),
    ((-700.0,) + K_KITTI[1:], (1242, 375), (), "plumb_bob", "positive"),
    (K_KITTI, (0, 375), (), "plumb_bob", "outside 1..16384"),
    (K_KITTI, (1242, 375), (float("nan"), 0, 0, 0, 0), "plumb_bob", "NaN or inf"),
    (K_KITTI, (1242, 375), (1e9, 0, 0, 0, 0), "plumb_bob", "beyond"),
    (K_KITTI, (1242, 375), (0.1,) * 10000, "plumb_bob", "10000 coefficients"),
    (K_KITTI, (1242, 375), (0.1, 0.0, 0.0), "rational_polynomial", "3 coefficients; "
     "rational_polynomial takes 8"),
    (K_KITTI, (1242, 375), (-5.0, 0, 0, 0, 0), "plumb_bob", "folds"),
])
def test_calibrations_that_cannot_give_a_grid_are_named(k: tuple, size: tuple, d: tuple,
                                                         model: str, reason: str) -> None:
    from ssnet_ros.core.ground_grid import calibration_problem

    problem = calibration_problem(k, *size, d, model)
    assert problem is not None and reason in problem
    with pytest.raises(SSNetError, match=re.escape(reason)):
        Camera(k, size[0], size[1], (0.0, 0.0, 1.65, 0.0, 0.0, 0.0), d, model)


def test_real_calibrations_pass() -> None:
    from ssnet_ros.core.ground_grid import calibration_problem

    kitti_d = (-0.3691481, 0.1968681, 0.001353473, 0.0005677587, -0.06770705)
    assert calibration_problem(K_KITTI, 1242, 375, kitti_d, "plumb_bob") is None
    assert calibration_problem(K_KITTI, 1242, 375, (), "plumb_bob") is None
    assert calibration_problem(K_KITTI, 1242, 375, (0.1, 0.01) + (0.0,) * 6,
                               "rational_polynomial") is None


def test_a_camera_below_the_ground_is_refused() -> None:
    with pytest.raises(SSNetError, match="camera_pose z is -0.5 m: the camera must be above"):
        Camera(K_KITTI, 1242, 375, (0.0, 0.0, -0.5, 0.0, 0.0, 0.0))


def test_a_calibration_of_another_aspect_ratio_gives_no_grid() -> None:
    camera = Camera((100.0, 0.0, 50.0, 0.0, 100.0, 450.0, 0.0, 0.0, 1.0), 100, 900,
                    (0.0, 0.0, 1.65, 0.0, 0.0, 0.0))
    with pytest.raises(SSNetError, match="for 100x900 images but the images are 1242x375"):
        grid_lookup(camera, GRID, (375, 1242))
    grid_lookup(camera, GRID, (1800, 200))  # binned or resized: the same aspect ratio


def test_cells_beyond_the_distortion_fold_are_unknown_not_mapped_back() -> None:
    """Strong barrel distortion folds rays from outside the view back into the image; the
    cells there are unknown."""
    from ssnet_ros.core.ground_grid import fold_radius, lookup_problem

    d = (-0.3, 0.0, 0.0, 0.0, 0.0)
    fold = fold_radius(d)
    assert 1.0 < fold < 1.1  # d(r(1 - 0.3 r^2))/dr = 0 at r = 1/sqrt(0.9)
    camera = Camera((300.0, 0.0, 320.0, 0.0, 300.0, 240.0, 0.0, 0.0, 1.0), 640, 480,
                    (0.0, 0.0, 1.65, 0.0, 0.3, 0.0), d)
    lookup = grid_lookup(camera, GridSpec(0.25, (0.0, 10.0), (-30.0, 30.0)))
    xs, ys = GridSpec(0.25, (0.0, 10.0), (-30.0, 30.0)).centres()
    optical = to_optical(camera, np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1))
    radius = np.hypot(optical[:, 0], optical[:, 1]) / optical[:, 2]
    beyond = ((optical[:, 2] > 0) & (radius >= fold)).reshape(xs.shape)
    assert beyond.any() and (lookup.index[beyond] == -1).all()
    assert lookup_problem(lookup) is None
    up = Camera(camera.k, 640, 480, (0.0, 0.0, 1.65, 0.0, -1.2, 0.0))  # looking at the sky
    assert "sees no cell" in lookup_problem(grid_lookup(up, GRID))


def test_a_grid_too_fine_for_memory_is_refused_with_the_coarsest_resolution() -> None:
    with pytest.raises(SSNetError, match=r"4000x4000 cells at resolution 0.01 m needs about "
                                         r"3200 MB to project.*at least 0.025 m"):
        GridSpec(0.01, (0.0, 40.0), (-20.0, 20.0))
    GridSpec(0.025, (0.0, 40.0), (-20.0, 20.0))
