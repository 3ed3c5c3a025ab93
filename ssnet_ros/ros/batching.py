"""Gathering the frames of several cameras into one batch: newest-wins slots, bounded wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

STALE_AFTER = 1.0
"""Seconds without a frame after which a camera is not waited for."""


class FrameGatherer(Generic[T]):
    """One newest-wins slot per camera; :meth:`take` hands over the frames that came together.

    :meth:`put` replaces an untaken frame of the same camera (nothing queues, so latency never
    grows). :meth:`take` waits for a first frame, then up to ``wait`` seconds after that frame
    arrived for the other live cameras (those that sent a frame in the last ``stale_after``
    seconds), and returns every frame present. With one camera it is a one-slot mailbox.
    """

    def __init__(self, cameras: int, *, stale_after: float = STALE_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if cameras < 1:
            raise ValueError(f"cameras must be >= 1, got {cameras}")
        self._cond = threading.Condition()
        self._slots: list[tuple[T, float] | None] = [None] * cameras
        self._last_put = [-float("inf")] * cameras
        self._stale_after, self._clock = stale_after, clock
        self._closed = False

    def put(self, camera: int, item: T) -> bool:
        """Store ``item`` as ``camera``'s newest frame; True if it replaced an untaken one."""
        with self._cond:
            now = self._clock()
            replaced = self._slots[camera] is not None
            first = self._slots[camera][1] if replaced else now  # type: ignore[index]
            self._slots[camera] = (item, first)  # the batch deadline runs from the first
            self._last_put[camera] = now
            self._cond.notify()
            return replaced

    def take(self, wait: float, timeout: float | None = None) -> list[tuple[int, T]] | None:
        """(camera, item) pairs in camera order, or None on ``timeout`` or when closed."""
        with self._cond:
            if not self._cond.wait_for(self._any_or_closed, timeout):
                return None
            if self._closed:
                return None
            while not self._closed:
                now = self._clock()
                first = min(slot[1] for slot in self._slots if slot is not None)
                remaining = first + wait - now
                if remaining <= 0 or self._all_live_present(now):
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            batch = [(i, slot[0]) for i, slot in enumerate(self._slots) if slot is not None]
            self._slots = [None] * len(self._slots)
            return batch

    def _any_or_closed(self) -> bool:
        return self._closed or any(slot is not None for slot in self._slots)

    def _all_live_present(self, now: float) -> bool:
        return all(slot is not None or now - last > self._stale_after
                   for slot, last in zip(self._slots, self._last_put))

    def close(self) -> None:
        """Wake every waiter; later :meth:`take` calls return None at once."""
        with self._cond:
            self._closed = True
            self._slots = [None] * len(self._slots)
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed
