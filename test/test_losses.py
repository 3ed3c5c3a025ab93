"""The set-valued loss: cross-entropy for single classes, -log of summed probability for sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssnet_ros.datasets import IDDLite
from ssnet_ros.datasets.classes import CAMVID_CLASSES
from ssnet_ros.training.losses import set_nll


def test_single_class_sets_are_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 6)
    targets = torch.randint(0, 5, (2, 4, 6))
    targets[0, 0, :3] = 255
    weight = torch.rand(5) + 0.1
    expected = F.cross_entropy(logits, targets, weight=weight, ignore_index=255)
    got = set_nll(logits, targets, torch.eye(5, dtype=torch.bool), weight)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_set_scores_the_summed_probability_by_hand() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).view(1, 3, 1, 1)
    allowed = torch.tensor([[True, False, False], [False, True, True]])
    loss = set_nll(logits, torch.tensor([[[1]]]), allowed)
    assert loss.item() == pytest.approx(-np.log(0.5), rel=1e-5)  # 0.3 + 0.2


def test_any_class_of_the_set_is_free_to_win() -> None:
    """Gradient descent on the 'vehicles' set raises Car + Bicyclist, not one of them."""
    allowed = torch.from_numpy(IDDLite.info.target_sets(CAMVID_CLASSES))
    vehicles = IDDLite.info.class_names.index("vehicles")
    logits = torch.zeros(1, 11, 1, 1, requires_grad=True)
    set_nll(logits, torch.tensor([[[vehicles]]]), allowed).backward()
    grad = logits.grad.view(-1)
    car, bike = CAMVID_CLASSES.index("Car"), CAMVID_CLASSES.index("Bicyclist")
    assert grad[car] < 0 and grad[bike] < 0
    others = [i for i in range(11) if i not in (car, bike)]
    assert (grad[others] > 0).all()


def test_idd_sets_never_allow_road_outside_drivable() -> None:
    table = IDDLite.info.target_sets(CAMVID_CLASSES)
    road = CAMVID_CLASSES.index("Road")
    assert table[:, road].tolist() == [name == "drivable" for name in IDDLite.info.class_names]
    assert table.any(axis=1).all()  # every IDD class allows at least one CamVid class


def test_all_ignored_pixels_give_zero_not_nan() -> None:
    loss = set_nll(torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), 255),
                   torch.eye(3, dtype=torch.bool))
    assert loss.item() == 0.0
