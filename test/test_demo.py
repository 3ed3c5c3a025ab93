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
                             + ["c_kitti_grid.png", "grid_check.json"])
    # the KITTI-sized frame: the node's own grid, checked against its labels projected by
    # OpenCV (every seen cell agrees, nothing claimed outside the image)
    import json

    check = json.loads((out / "grid_check.json").read_text())["c_kitti.png"]
    assert check["agreement"] == 1.0 and check["claimed_unseen"] == 0
    assert check["cells_seen"] > 30000 and check["ego_lane_seen"] == 1.0
    assert read_rgb(out / "c_kitti_grid.png").shape == (400, 400, 3)
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
    (["--images", "", "--weights", "w.pt"], "make demo IMAGES=/path/to/pngs"),
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
