"""The node's worker thread: the frames of the cameras that came together, decoded once, run
through the ROS-free frame pipeline in one batch, and published.

The subscription callback only checks a message (:meth:`SegmentationWorker.put`: the
transport's cheap check, no pixel read) and drops it into its camera's one-slot mailbox
(newest wins, a replaced frame counts as skipped). The worker takes a batch, decodes each frame
someone waits for, runs :class:`~ssnet_ros.core.camera_pipeline.Pipeline` (labels, mask,
confidence, colour, overlay, trust, the fused drivable grid) and publishes with each image's
own header. It reads the node's settings at every batch, so a parameter change applies from
the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.camera_pipeline import NO_POSE, BatchOutputs, Frame, Pipeline, TrustPolicy
from ..errors import SSNetError
from .batching import FrameGatherer
from .camera import Camera
from .conversions import TRANSPORTS, grid_msg, stamp_ns
from .poses import PoseSource


@dataclass
class _Message:
    """A camera's message on its way through the worker."""

    camera: Camera
    msg: Any
    received: float
    checked: Any
    """What the transport's check returned in the callback (its decode needs it)."""
    want: set[str] = field(default_factory=set)
    conversion: float = 0.0


class SegmentationWorker:
    """Batches, segments and publishes the frames of ``node``'s cameras on its own thread.

    ``node`` gives ``settings``, ``segmenter`` and its logger; ``grid_wanted`` says whether a
    drivable grid is to be made now; ``grid_pub`` publishes it; ``log_error`` is throttled.
    """

    def __init__(self, node: Any, cameras: list[Camera], pipeline: Pipeline,
                 poses: PoseSource, grid_pub: Any, grid_wanted: Callable[[], bool],
                 log_error: Callable[[str], None]) -> None:
        self.node, self.cameras, self.pipeline = node, cameras, pipeline
        self.poses, self.grid_pub, self.grid_wanted = poses, grid_pub, grid_wanted
        self.log_error = log_error
        self.gatherer: FrameGatherer[tuple[Any, float, Any]] = FrameGatherer(len(cameras))
        self.thread = threading.Thread(target=self._run, name="ssnet-worker", daemon=True)
        self.thread.start()

    def put(self, index: int, msg: Any) -> None:
        """A camera's new message (subscription callback): counted, checked once, kept."""
        now = time.monotonic()
        cam = self.cameras[index]
        cam.received.tick(now)
        cam.gaps.add(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        try:
            checked = TRANSPORTS[self.node.settings.input_transport].check(msg)
        except SSNetError as exc:
            self.reject(cam, exc)
            return
        if self.gatherer.put(index, (msg, now, checked)):
            cam.skipped.add()

    def stop(self, timeout: float) -> bool:
        """Drop what waits and let the frame in hand finish (up to ``timeout`` s); False when
        the thread is still busy (it stops after that frame)."""
        self.gatherer.close()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def reject(self, cam: Camera, exc: SSNetError) -> None:
        """Count and log (throttled) a malformed message."""
        cam.rejected.add()
        self.log_error(f"rejected a malformed image: {exc}")

    def _run(self) -> None:
        while (batch := self.gatherer.take(self.node.settings.batch_wait)) is not None:
            messages = [_Message(self.cameras[i], *item) for i, item in batch]
            try:
                self._process(messages)
            except Exception as exc:  # keep serving; a closing node may see destroyed handles
                if self.gatherer.closed:
                    return
                for m in messages:
                    m.camera.failed.add()
                self.log_error(f"segmentation failed: {exc!r}")

    def _decode(self, messages: list[_Message], grid: bool) -> list[tuple[_Message, Frame]]:
        """The frames someone waits for, decoded once (rejected ones counted and logged)."""
        s, seg, ready = self.node.settings, self.node.segmenter, []
        decode = TRANSPORTS[s.input_transport].decode
        trust = seg.trust_model is not None and s.publish_trust
        for m in messages:
            cam = m.camera
            m.want = cam.wanted(s.publish) | (
                {"drivable_trust"} if trust and cam.wants_trust() else set())
            if not m.want and not grid:
                cam.idle.add()
                continue
            t0 = time.perf_counter()
            try:
                rgb = decode(m.msg, m.checked)
            except SSNetError as exc:
                self.reject(cam, exc)
                continue
            m.conversion = time.perf_counter() - t0
            header = m.msg.header
            pose = self.poses.at(header, cam.input_topic) if grid and not cam.pipe.pose \
                and cam.pipe.calibration is not None else None
            ready.append((m, Frame(cam.pipe, rgb, stamp_ns(header), header.frame_id, pose)))
        return ready

    def _process(self, messages: list[_Message]) -> None:
        """Decode the frames, segment them together and publish each camera's outputs."""
        s, seg = self.node.settings, self.node.segmenter
        grid = self.grid_wanted()
        ready = self._decode(messages, grid)
        if not ready:
            return
        t1 = time.perf_counter()
        if seg.drivable_rule != s.drivable_rule:
            seg.set_drivable_rule(s.drivable_rule)
        outputs = set().union(*(m.want for m, _ in ready)) - {"drivable_trust"}
        batch = self.pipeline.run(
            [f for _, f in ready], outputs, overlay_alpha=s.overlay_alpha, grid=grid,
            trust=TrustPolicy(True, s.trust_threshold, s.trust_unknown_grid))
        inference = time.perf_counter() - t1
        if grid:
            self._publish_grid(batch, [m.camera for m, _ in ready])
        for (m, _), result in zip(ready, batch.outputs):
            t2 = time.perf_counter()
            m.camera.publish(result, m.msg.header, m.want, seg.trust_model)
            m.camera.count(len(ready), conversion=m.conversion, inference=inference,
                           publishing=time.perf_counter() - t2,
                           total=time.monotonic() - m.received)

    def _publish_grid(self, batch: BatchOutputs, cameras: list[Camera]) -> None:
        """Publish the batch's fused grid (stamped with the newest of its images); say why a
        camera gave none."""
        for cam in cameras:
            problem = cam.pipe.grid_problem
            if cam.pipe.calibration is None and not cam.grid_problem_logged:
                cam.grid_problem_logged = True
                self.node.get_logger().warning(
                    f"no drivable grid from {cam.input_topic} yet: no usable camera_info on "
                    f"{cam.info_topic}")
            elif problem and problem != NO_POSE:  # a missing pose logged its own error
                self.log_error(f"no drivable grid from {cam.input_topic}: {problem}")
        if batch.grid is None:
            return
        s = self.node.settings
        self.grid_pub.publish(grid_msg(batch.grid, s.grid, s.grid_frame, batch.grid_stamp_ns))
        for cam in cameras:
            if cam.pipe in batch.grid_cameras:
                cam.grid_published.add()
