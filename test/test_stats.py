"""Diagnostics statistics and the one-slot mailbox (pure Python)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from ssnet_ros.mailbox import Mailbox
from ssnet_ros.stats import Counter, LatencyWindow, RateMeter, percentile


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


def test_mailbox_keeps_only_the_newest_item() -> None:
    box: Mailbox[int] = Mailbox()
    assert box.put(1) is False
    assert box.put(2) is True  # 1 was never taken
    assert box.take(timeout=0) == 2
    assert box.take(timeout=0.01) is None


def test_mailbox_wakes_a_waiting_taker_and_close_releases_it() -> None:
    box: Mailbox[str] = Mailbox()
    got: list[str | None] = []

    def take_twice() -> None:
        got.append(box.take())
        got.append(box.take())

    taker = threading.Thread(target=take_twice)
    taker.start()
    time.sleep(0.05)  # let it wait
    box.put("frame")
    deadline = time.monotonic() + 2
    while not got and time.monotonic() < deadline:
        time.sleep(0.001)
    assert got == ["frame"]
    box.close()
    taker.join(timeout=2)
    assert not taker.is_alive()
    assert got == ["frame", None]
    assert box.closed and box.take() is None


def test_gap_counter_estimates_frames_missing_from_the_stamps() -> None:
    from ssnet_ros.stats import GapCounter

    gaps = GapCounter()
    stamps = [100 + 0.1 * i for i in range(40)]
    for i, stamp in enumerate(stamps):
        if i not in (20, 30, 31, 32):  # four frames never arrive
            gaps.add(stamp + 0.002 * (i % 3))  # a little jitter
    assert gaps.lost == 4
    gaps.add(stamps[-1] - 1.0)  # backwards: ignored
    gaps.add(stamps[-1] + 60.0)  # a pause, not loss
    assert gaps.lost == 4
