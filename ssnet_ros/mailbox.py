"""A one-slot, newest-wins hand-off between a producer callback and a worker thread."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Holds at most one item: :meth:`put` replaces an untaken item, :meth:`take` waits for one.

    Nothing ever queues up, so a slow consumer always works on the newest item.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; return True if it replaced an item nobody had taken."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` seconds; None on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if self._closed or not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiter; later :meth:`take` calls return None at once."""
        with self._cond:
            self._closed = True
            self._item, self._full = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed
