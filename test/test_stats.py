"""Diagnostics statistics (pure Python)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from ssnet_ros.core.stats import Counter, LatencyWindow, RateMeter, percentile


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = list(np.random.default_rng(2).exponential(size=37))
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_edge_cases() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_rate_meter_counts_events_in_its_window() -> None:
    meter = RateMeter(window=2.0)
    assert meter.rate(now=0.0) == 0.0
    for i in range(11):
        meter.tick(now=10.0 + i * 0.1)  # 10 Hz for one second
    assert meter.rate(now=11.0) == pytest.approx(10.0)
    assert meter.total == 11
    assert meter.rate(now=20.0) == 0.0  # everything left the window
    assert meter.total == 11


def test_latency_window_keeps_the_newest_values() -> None:
    window = LatencyWindow(size=4)
    assert math.isnan(window.percentile_ms(50))
    for seconds in (1.0, 1.0, 0.001, 0.002, 0.003, 0.004):
        window.add(seconds)
    assert len(window) == 4
    assert window.percentile_ms(0) == pytest.approx(1.0)
    assert window.percentile_ms(100) == pytest.approx(4.0)


def test_counter_is_thread_safe() -> None:
    counter = Counter()
    threads = [threading.Thread(target=lambda: [counter.add() for _ in range(10000)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.value == 40000
