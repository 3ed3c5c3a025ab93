"""Kept for imports from before the metrics moved: see :mod:`ssnet_ros.core.metrics`."""

from __future__ import annotations

from ..core.metrics import confusion_matrix, summarize

__all__ = ["confusion_matrix", "summarize"]
