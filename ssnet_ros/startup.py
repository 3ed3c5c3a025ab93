"""What a node process does before its slow imports (rclpy, torch: seconds): take SIGINT and
SIGTERM, so that Ctrl-C at any moment of start-up ends it cleanly, and follow its parent.

Signal policy of the node processes: the first SIGINT or SIGTERM stops the node (during
start-up it ends the start-up at once, exit 0, no traceback); later ones are ignored while it
stops. On Linux the process also asks the kernel for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), so a node holding a GPU does not outlive a ``ros2 launch`` that
was killed (upstream launch leaves its children running then).

Imports nothing heavy: the entry points (:mod:`ssnet_ros.node`,
:mod:`ssnet_ros.lifecycle_node`) call :func:`guard_start` before they import the node.
"""

from __future__ import annotations

from .ros.signals import (STOP, Interrupted, caused_by_signal, die_with_parent, guard_start,
                          ignore_signals)

__all__ = ["STOP", "Interrupted", "caused_by_signal", "die_with_parent", "guard_start",
           "ignore_signals", "run_node"]


def run_node(lifecycle: bool, argv: list[str] | None = None) -> int:
    """Guard the start-up, import the node and run it until SIGINT/SIGTERM (exit status)."""
    guard_start()
    code = 0
    try:
        if lifecycle:
            from .ros.lifecycle import main
        else:
            from .ros.node import main
        if not STOP.is_set():
            code = main(argv)
    except Interrupted:
        pass
    except Exception as exc:  # the Interrupted, wrapped by Python on its way out of an import
        if not caused_by_signal(exc):
            raise
    ignore_signals()
    return code
