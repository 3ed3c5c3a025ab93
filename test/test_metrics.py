"""Metrics against hand-computed confusion matrices, ignore pixels included."""

from __future__ import annotations

import numpy as np
import pytest

from ssnet_ros.training.metrics import confusion_matrix, summarize


def test_confusion_matrix_ignores_void() -> None:
    truth = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 0, 2]], np.uint8)
    m = confusion_matrix(pred, truth, 3)
    expected = np.array([[1, 1, 0],   # truth 0: one right, one called 1
                         [0, 2, 0],   # truth 1: both right
                         [1, 0, 0]])  # truth 2: called 0; the void pixel is not counted
    np.testing.assert_array_equal(m, expected)


def test_summary_by_hand() -> None:
    m = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    s = summarize(m, ["a", "b", "c"], drivable_ids=[1])
    # IoU a = 1 / (2 + 2 - 1) = 1/3; b = 2 / (2 + 3 - 2) = 2/3; c = 0 / (1 + 0 - 0) = 0
    assert s["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    d = s["drivable"]  # drivable = {b}: tp 2, fp 1 (a called b), fn 0
    assert d["precision"] == pytest.approx(2 / 3)
    assert d["recall"] == pytest.approx(1.0)
    assert d["iou"] == pytest.approx(2 / 3)
    assert d["f1"] == pytest.approx(0.8)
    assert s["pixels"] == 5


def test_absent_classes_are_left_out_of_the_means() -> None:
    m = np.array([[3, 0, 0], [0, 0, 0], [0, 0, 1]])
    s = summarize(m, ["a", "b", "c"], drivable_ids=[0, 2])
    assert s["per_class_iou"]["b"] is None
    assert s["miou"] == pytest.approx(1.0)
    assert s["drivable"]["iou"] == pytest.approx(1.0)


def test_bad_shapes_and_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), 3)
    with pytest.raises(ValueError, match="class ids >= 3"):
        confusion_matrix(np.full((2, 2), 5, np.uint8), np.zeros((2, 2), np.uint8), 3)
