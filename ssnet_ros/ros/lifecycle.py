"""The managed (lifecycle) segmentation node, as Nav2 users run perception.

    ros2 run ssnet_ros segmentation_lifecycle_node --ros-args -p weights:=ssnet_camvid
    ros2 lifecycle set /ssnet configure   # validate parameters, load the weights, warm up
    ros2 lifecycle set /ssnet activate    # subscribe and publish

Same topics, parameters and diagnostics as :class:`~ssnet_ros.ros.node.SegmentationNode`,
through the same code (:class:`~ssnet_ros.ros.node.SegmentationBase`), in transitions:

- configure: read and validate the parameters, load the weights, warm up, create the
  publishers; a bad parameter or weights file fails the transition with one sentence and the
  node stays unconfigured (fix the parameter, configure again);
- activate: subscribe to the camera(s), start the worker and diagnostics;
- deactivate: unsubscribe and stop; nothing queued is kept, nothing is published;
- cleanup: destroy the publishers and release the model (and its GPU memory);
- shutdown: all of the above from any state.

Startup parameters (weights, device, ...) may be set while the node is unconfigured; once
configured they are refused until cleanup. The node has no bond: under nav2_lifecycle_manager
set ``bond_timeout: 0.0``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from lifecycle_msgs.srv import ChangeState
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from ..errors import SSNetError
from . import declare
from .diagnostics import network_input
from .node import NODE_NAME, SegmentationBase, _Interrupted, main as run_node
from .signals import caused_by_signal

WARM_UP_SIZE = (360, 480)
"""Frame size of the warm-up pass at configure (the first real frame of another size pays
its own kernel selection)."""


class SegmentationLifecycleNode(SegmentationBase, LifecycleNode):
    """A managed SegmentationNode: starts unconfigured; see the module docstring."""

    STARTUP_PARAMETERS_WRITABLE = True

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self.configuring = False
        """True while configure loads the model (a SIGINT/SIGTERM then ends it at once)."""
        service = self._service_change_state
        self._rclpy_change_state = service.callback
        service.callback = self._on_change_state
        self._init_state()
        self._declare_parameters()
        declare.warn_unknown_overrides(self)
        self.get_logger().info("unconfigured; configure and activate it to segment")

    def _on_change_state(self, request: ChangeState.Request, response: ChangeState.Response
                         ) -> ChangeState.Response:
        """rclpy's ChangeState service, answering a transition that is invalid in the current
        state (rclpy raises inside the executor and never replies) with success false."""
        transition = request.transition
        valid = {t[0]: t[1] for t in self._state_machine.available_transitions}
        if not transition.label and transition.id not in valid:
            current = self._state_machine.current_state[1]
            self.get_logger().warning(
                f"refused transition {transition.id}: not valid in state {current} (valid: "
                f"{', '.join(f'{i} {label}' for i, label in sorted(valid.items()))})")
            response.success = False
            return response
        try:
            return self._rclpy_change_state(request, response)
        except Exception as exc:  # noqa: BLE001 - rclpy raises RCLError and RuntimeError
            self.get_logger().warning(f"refused transition {transition.id} "
                                      f"{transition.label!r}: {' '.join(str(exc).split())[:200]}")
            response.success = False
            return response

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configuring = True
            try:
                self._load(declare.current_values(self))
                assert self.segmenter is not None
                size = self.settings.input_size or WARM_UP_SIZE
                self.segmenter(np.zeros((*size, 3), np.uint8), confidence=False)
                self._open_outputs()
            finally:
                self.configuring = False
        except SSNetError as exc:
            self.get_logger().error(f"cannot configure: {exc}")
            self._unload()
            return TransitionCallbackReturn.FAILURE
        except (_Interrupted, Exception) as exc:  # Exception: an Interrupted Python wrapped
            if not caused_by_signal(exc):
                raise
            self.get_logger().info("configure interrupted by SIGINT/SIGTERM: stopping")
            self._close_outputs()
            self._unload()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self.segmenter.weights} on "
                               f"{self.segmenter.device}, network input "
                               f"{network_input(self.settings, self.segmenter)}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._open_inputs()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_inputs()
        self.get_logger().info("inactive: not subscribed, nothing published")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_outputs()
        self._unload()
        if not self._drivable_given:
            declare.hold_empty(self, "drivable_classes", Parameter.Type.STRING_ARRAY)
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._release()

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._release()

    def _release(self) -> TransitionCallbackReturn:
        """Everything back, from whatever state the node is in."""
        self._close_inputs()
        self._close_outputs()
        self._unload()
        return TransitionCallbackReturn.SUCCESS


def main(argv: list[str] | None = None) -> int:
    """``ros2 run ssnet_ros segmentation_lifecycle_node``: 0 on a clean stop."""
    return run_node(argv, node_class=SegmentationLifecycleNode,
                    program="segmentation_lifecycle_node")


if __name__ == "__main__":
    from .signals import ignore_signals

    code = main()
    ignore_signals()
    sys.exit(code)
