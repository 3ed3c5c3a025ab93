"""Thread-safe rate meters and latency percentiles for node diagnostics (pure Python)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` with linear interpolation; NaN if empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ms_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99, max and mean of durations in seconds, in milliseconds (None if empty)."""
    if not seconds:
        return dict.fromkeys(("p50", "p90", "p99", "max", "mean"))
    return {"p50": percentile(seconds, 50) * 1e3, "p90": percentile(seconds, 90) * 1e3,
            "p99": percentile(seconds, 99) * 1e3, "max": max(seconds) * 1e3,
            "mean": sum(seconds) / len(seconds) * 1e3}


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure for a report: ``digits`` decimals, or n/a for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


class RateMeter:
    """Events per second over the last ``window`` seconds, plus a running total."""

    def __init__(self, window: float = 5.0) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self.window = window
        self.total = 0
        self.last = -math.inf
        """Time of the latest event (-inf before the first)."""
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        """Record one event at ``now`` (default: time.monotonic())."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.total += 1
            self.last = now
            self._times.append(now)
            self._trim(now)

    def rate(self, now: float | None = None) -> float:
        """Events per second in the window ending at ``now``; 0 with fewer than two events."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = now - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()


class LatencyWindow:
    """The last ``size`` durations (seconds), summarised as percentiles in milliseconds."""

    def __init__(self, size: int = 200) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one duration in seconds."""
        with self._lock:
            self._values.append(seconds)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile in milliseconds (NaN while empty)."""
        with self._lock:
            values = list(self._values)
        return percentile(values, q) * 1000.0


class Counter:
    """A thread-safe integer counter."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        """Increase the count by ``n``."""
        with self._lock:
            self._value += n

    @property
    def value(self) -> int:
        """The current count."""
        return self._value


class GapCounter:
    """Estimates frames lost before they reached us from gaps in a stream's header stamps.

    A camera stamps frames at a steady period; the median of the recent stamp intervals is
    that period, and an interval of ``k`` periods (``k`` >= 2, rounded) means ``k - 1``
    frames never arrived (lost in transport, or dropped by the middleware's one-message
    queue). Stamps that go backwards or repeat are ignored; a gap longer than ``max_gap``
    seconds (the camera paused, a bag restarted) is not counted as loss.
    """

    def __init__(self, history: int = 50, max_gap: float = 2.0) -> None:
        self.lost = 0
        self.max_gap = max_gap
        self._intervals: deque[float] = deque(maxlen=history)
        self._last: float | None = None
        self._lock = threading.Lock()

    def add(self, stamp: float) -> None:
        """Record the header stamp (seconds) of a received frame."""
        with self._lock:
            last, self._last = self._last, stamp if self._last is None else max(stamp,
                                                                             self._last)
            if last is None or stamp <= last:
                return
            gap = stamp - last
            if len(self._intervals) >= 5 and gap <= self.max_gap:
                period = percentile(self._intervals, 50)
                if period > 0:
                    missing = round(gap / period) - 1
                    if missing >= 1:
                        self.lost += missing
                        return  # a gap is not a sample of the period
            self._intervals.append(gap)


class Throttled:
    """Passes a message on at most once per ``period`` seconds, saying how many it held back
    (rclpy's own throttle costs about a millisecond per call)."""

    def __init__(self, emit: Callable[[str], None], period: float) -> None:
        self._emit, self.period = emit, period
        self._last = -period
        self._held = 0

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last < self.period:
            self._held += 1
            return
        self._last = now
        held, self._held = self._held, 0
        self._emit(text + (f" ({held} similar errors not logged)" if held else ""))
