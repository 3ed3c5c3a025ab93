"""Signal policy of the node processes, without ROS or torch (importable before them).

The first SIGINT or SIGTERM stops the node (during start-up it ends the start-up at once, exit
0, no traceback); later ones are ignored while it stops. On Linux the process also asks the
kernel for SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a node holding a GPU
does not outlive a ``ros2 launch`` that was killed (upstream launch leaves its children running
then). :mod:`ssnet_ros.startup` runs a node process under this policy.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
from typing import Any

STOP = threading.Event()
"""Set by the first SIGINT/SIGTERM of the process."""
PR_SET_PDEATHSIG = 1


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the node was starting (not an Exception, so that no
    ``except Exception`` on the way, e.g. around torch.load, mistakes it for an error)."""


def caused_by_signal(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an :class:`Interrupted` or was raised because of one: Python wraps
    an exception raised in some places (a descriptor's ``__set_name__`` while a module such as
    torch defines its classes) in a RuntimeError whose cause is the Interrupted."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Interrupted):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _on_signal(signum: int, frame: Any) -> None:
    first = not STOP.is_set()
    STOP.set()
    if first:
        raise Interrupted


def guard_start() -> None:
    """Take SIGINT and SIGTERM (the first ends the start-up, see the module docstring) and
    ask for SIGTERM when the parent process dies."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    die_with_parent()


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False elsewhere or
    when the call fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def ignore_signals() -> None:
    """Ignore SIGINT/SIGTERM from now on: the process is ending (Python restores the default
    action of signals with Python handlers at exit, where a late second Ctrl-C would kill it
    by the signal; ignored signals stay ignored)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
