"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# ---- ROS node / demo fixtures (ssnet_ros.ros.node, conversions, demo) -------------------------
# A randomly initialised SSNet saved as a checkpoint: test data only, never a usable model.

CAMVID_MEAN = (123.68, 116.779, 103.939)


def save_random_checkpoint(path: Path, *, zero_classifier_bias: bool = False,
                       model_name: str = "ssnet") -> Path:
    import torch

    from ssnet_ros.core.checkpoint import ModelCard, save_checkpoint
    from ssnet_ros.datasets.classes import CAMVID_CLASSES, CAMVID_DRIVABLE, CAMVID_PALETTE
    from ssnet_ros.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=len(CAMVID_CLASSES))
    if zero_classifier_bias:
        with torch.no_grad():
            model.classifier.bias.zero_()
    card = ModelCard(model=model_name, class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE,
                     drivable_classes=CAMVID_DRIVABLE, mean=CAMVID_MEAN, std=(1.0, 1.0, 1.0),
                     train_size=(360, 480), dataset="camvid")
    return save_checkpoint(path, model, card)


@pytest.fixture(autouse=True, scope="module")
def restore_torch_threads() -> Iterator[None]:
    """Give every test module the process's torch thread count back: modules that run on one
    intra-op thread must not leave the next ones (e.g. training) on one."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ssnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 11-class CamVid SSNet checkpoint (torch.manual_seed(0))."""
    return save_random_checkpoint(tmp_path_factory.mktemp("weights") / "ssnet_random.pt")


@pytest.fixture(scope="session")
def ssnet_checkpoint_varied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ssnet_checkpoint but with a zero classifier bias, so its labels vary per pixel
    (the seeded random model otherwise predicts one class everywhere)."""
    return save_random_checkpoint(tmp_path_factory.mktemp("weights") / "ssnet_varied.pt",
                              zero_classifier_bias=True)

_ROS_ENV = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "OMP_NUM_THREADS",
            "FASTRTPS_DEFAULT_PROFILES_FILE")
_domains_used = 0


@contextmanager
def ros_domain(domain: int) -> Iterator[Any]:
    """An rclpy Context alone on ROS domain ``domain``, with the environment for test nodes.

    Sets (restored afterwards) ROS_DOMAIN_ID, localhost-only discovery, the large-image Fast
    DDS profile and OMP_NUM_THREADS=1 (for the nodes the tests start), so parallel test
    processes and modules do not talk to each other.
    """
    import rclpy

    from ssnet_ros.ros.client import use_large_image_profile

    saved = {key: os.environ.get(key) for key in _ROS_ENV}
    os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                      OMP_NUM_THREADS="1")
    use_large_image_profile()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ros_context() -> Iterator[Any]:
    """An rclpy Context for one test module, alone on a ROS domain of its own (1..100)."""
    global _domains_used
    _domains_used += 1
    with ros_domain((os.getpid() * 7 + _domains_used) % 100 + 1) as context:
        yield context

# ---- end of ROS node / demo fixtures ------------------------------------------------------

# ---- data and training fixtures (models, checkpoint, segmenter, train, eval) ---------------
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAMVID_ROOT = SHARED_DATA / "camvid"
NO_SHARED_DATA = ("the development data ../shared/data is not beside this checkout (it is on "
                  "development machines and CI only, never in the repository; see "
                  "docs/development.md)")


def shared_data_reason(path: Path) -> str:
    """Why a test that reads ``path`` under ../shared/data skips."""
    return f"needs ../{path.relative_to(SHARED_DATA.parent.parent)}: {NO_SHARED_DATA}"


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid copy in ../shared/data/camvid; skips with the reason when absent."""
    if not (CAMVID_ROOT / "train").is_dir():
        pytest.skip(shared_data_reason(CAMVID_ROOT))
    return CAMVID_ROOT


def write_camvid_fixture(root: Path, *, n_train: int = 3, n_val: int = 2,
                         size: tuple[int, int] = (48, 64)) -> Path:
    """A tiny CamVid-layout dataset: road bottom half, sky top, a car block, void border."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    h, w = size
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            labels = np.zeros((h, w), np.uint8)  # sky
            labels[h // 2:] = 3  # road
            x = int(rng.integers(0, w - 12))
            labels[h // 2 - 6:h // 2 + 4, x:x + 12] = 8  # car
            labels[:, :2] = 11  # void
            colours = np.array([[128, 128, 128], [128, 0, 0], [0, 0, 0], [128, 64, 128],
                                [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [64, 0, 128],
                                [0, 0, 0], [0, 0, 0], [255, 255, 255]], np.uint8)
            rgb = colours[labels] + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
            name = f"0001TP_{i:06d}.png"
            cv2.imwrite(str(root / split / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / f"{split}annot" / name), labels)
    return root


@pytest.fixture()
def camvid_fixture(tmp_path: Path) -> Path:
    """A small CamVid-format dataset written by the test itself."""
    return write_camvid_fixture(tmp_path / "camvid")
# ---- end of data and training fixtures ----------------------------------------------------
