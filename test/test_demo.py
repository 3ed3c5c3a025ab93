"""The demo: images through the real node process into PNGs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ssnet_ros.core.fileio import read_rgb
from ssnet_ros.core.segmenter import default_weights

SUFFIXES = ("input", "color", "overlay", "drivable", "labels", "panel")


def demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssnet_ros.tools.demo", *args],
                          capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


@pytest.mark.ros
@pytest.mark.timeout(200)
def test_demo_writes_every_output_for_every_image(
        ros_context: Any, ssnet_checkpoint_varied: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    sizes = {"b_second": (90, 160), "a_first": (120, 200), "c_kitti": (375, 1242)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(images / f"{name}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = demo("--images", str(images), "--weights", str(ssnet_checkpoint_varied),
                  "--out", str(out), "--input-height", "64", "--input-width", "96")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "segmented 3 of 3 images" in result.stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([f"{n}_{s}.png" for n in sizes for s in SUFFIXES]
                             + ["c_kitti_grid.png", "grid_check.json", "README.txt"])
    assert "NAME_labels.png" in (out / "README.txt").read_text()  # the black picture explained
    # the KITTI-sized frame: the node's own grid, checked against its labels projected by
    # OpenCV (every seen cell agrees, nothing claimed outside the image)
    import json

    check = json.loads((out / "grid_check.json").read_text())["c_kitti.png"]
    assert check["agreement"] == 1.0 and check["claimed_unseen"] == 0
    assert check["cells_seen"] > 30000 and check["ego_lane_seen"] == 1.0
    grid = read_rgb(out / "c_kitti_grid.png")  # 400x400 cells, title above, legend below
    assert grid.shape[1] == 400 and grid.shape[0] > 400 + 40
    assert (grid[:20] == 255).mean() > 0.8 and (grid[-40:] == 255).mean() > 0.6
    for name, (h, w) in sizes.items():
        original = read_rgb(images / f"{name}.png")
        np.testing.assert_array_equal(read_rgb(out / f"{name}_input.png"), original)
        panel = read_rgb(out / f"{name}_panel.png")  # overlay above tinted mask, legend
        assert panel.shape[1] == 960 and panel.shape[0] > 2 * round(h * 960 / w)
        assert read_rgb(out / f"{name}_overlay.png").shape == (h, w, 3)
        labels = cv2.imread(str(out / f"{name}_labels.png"), cv2.IMREAD_UNCHANGED)
        drivable = cv2.imread(str(out / f"{name}_drivable.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == drivable.shape == (h, w)
        assert labels.max() < 11
        np.testing.assert_array_equal(drivable, np.where(labels == 3, 255, 0))  # CamVid Road


@pytest.mark.parametrize("args, words", [
    (["--images", "/no/such/folder", "--weights", "w.pt"], "make demo IMAGES=/path/to/pngs"),
    (["--images", "/no/such/folder", "--weights", "w.pt"], "make demo IMAGES="),
    (["--weights", ""], "WEIGHTS="),
    (["--weights", "/no/such/weights.pt"], "does not exist"),
])
def test_demo_explains_missing_inputs(tmp_path: Path, args: list[str], words: str) -> None:
    if args == ["--weights", ""] and default_weights() is not None:
        pytest.skip("this installation ships default weights")
    (tmp_path / "x.png").write_bytes(b"")
    if "--images" not in args:
        args = ["--images", str(tmp_path), *args]
    result = demo(*args, "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_package_ships_sample_frames_with_their_licence_and_camera() -> None:
    """A fresh clone (no ../shared) has images for the demo: three KITTI frames (a few hundred
    KB), their CC BY-NC-SA attribution and KITTI's calibration as the demo reads it."""
    from ssnet_ros.core.ground_grid import kitti_camera
    from ssnet_ros.tools.demo import SAMPLES, find_images, load_calibration

    images = find_images("")
    assert [p.parent for p in images] == [SAMPLES] * 3
    assert sum(p.stat().st_size for p in images) < 600_000
    for path in images:
        h, w = read_rgb(path).shape[:2]
        assert 370 <= h <= 375 and 1224 <= w <= 1242
    licence = (SAMPLES / "README.md").read_text()
    assert "CC BY-NC-SA 3.0" in licence and all(p.name in licence for p in images)
    camera = load_calibration(SAMPLES)
    assert camera is not None and camera.k == kitti_camera().k
    assert camera.pose == (0.0, 0.0, 1.65, 0.0, 0.0, 0.0)


def test_a_bad_calibration_file_is_one_message(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "calibration.yaml").write_text("image_width: 30\n")
    result = demo("--images", str(tmp_path), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "calibration.yaml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.ros
@pytest.mark.timeout(200)
def test_without_images_the_demo_segments_the_shipped_samples(
        ros_context: Any, ssnet_checkpoint_varied: Path, tmp_path: Path) -> None:
    """No --images (what `make demo` passes on a fresh clone): the first shipped KITTI frame,
    its calibration from calibration.yaml, the grid with the unknown range said."""
    out = tmp_path / "out"
    result = demo("--weights", str(ssnet_checkpoint_varied), "--out", str(out), "--limit", "1",
                  "--input-height", "64", "--input-width", "96")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "segmented 1 of 1 images" in result.stdout
    assert "um_000085_panel.png" in result.stdout and str(out.resolve()) in result.stdout
    assert (out / "um_000085_grid.png").is_file() and (out / "um_000085_labels.png").is_file()
    import json

    check = json.loads((out / "grid_check.json").read_text())["um_000085.jpg"]
    assert check["agreement"] == 1.0 and check["claimed_unseen"] == 0
