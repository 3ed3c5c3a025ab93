"""The node's /diagnostics: one DiagnosticStatus per camera (health, rates, latencies, counts,
the drivable grid's and the trust's state). docs/node.md lists every key."""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ..core.segmenter import Segmenter
from .camera import Camera
from .parameters import Settings


def status_name(fully_qualified_node_name: str, camera: str = "") -> str:
    """A camera's DiagnosticStatus name: ``front/ssnet: semantic segmentation`` for the single
    camera, ``ssnet: semantic segmentation of rear_left`` for camera rear_left."""
    name = f"{fully_qualified_node_name.lstrip('/')}: semantic segmentation"
    return f"{name} of {camera}" if camera else name


def network_input(settings: Settings, seg: Segmenter, focal_px: float | None = None) -> str:
    """The network input size as the log and the diagnostics state it."""
    if settings.input_size is not None:
        return f"{settings.input_size[0]}x{settings.input_size[1]}"
    if not seg.card.input_rule:
        return "each image's own size"
    focal = f", focal {focal_px:.1f} px" if focal_px else ""
    return f"automatic (model card rule{focal})"


def started(settings: Settings, seg: Segmenter, cameras: list[Camera], grid_topic: str | None
            ) -> list[str]:
    """The node's start-up log lines: what it segments, how, and its drivable grid."""
    s = settings
    topics = ", ".join(cam.input_topic for cam in cameras)
    lines = [f"segmenting {topics} ({s.input_transport}) with {seg.weights} on {seg.device} "
             f"({str(seg.dtype).removeprefix('torch.')}), network input "
             f"{network_input(s, seg)}"]
    if grid_topic is not None and s.grid is not None:
        g = s.grid
        source = f"camera_pose {list(s.camera_pose)}" if s.camera_pose else \
            "TF (grid_frame -> each image's frame_id)"
        lines.append(
            f"drivable grid on: {grid_topic} in {s.grid_frame}, x {list(g.x_range)} m, "
            f"y {list(g.y_range)} m, {g.resolution} m cells, camera pose from {source}; "
            f"waiting for camera_info on {', '.join(cam.info_topic for cam in cameras)} (no "
            f"grid before it comes)" + ("" if s.publish_grid else
                                        "; publish_drivable_grid is false for now"))
    return lines


def grid_trouble(cam: Camera, settings: Settings, grid_on: bool, listened: bool) -> str | None:
    """Why this camera gives no drivable grid while the node is to publish one (None: it does,
    or none is configured); ``grid_on``: the node has a grid publisher, ``listened``: someone
    subscribes to it."""
    if not grid_on or not settings.publish_grid:
        return None
    pipe = cam.pipe
    if pipe.calibration_problem:
        return f"camera_info on {cam.info_topic} is unusable: {pipe.calibration_problem}"
    if pipe.calibration is None and cam.received.total > 0 and (
            settings.camera_pose or listened):  # asked for, or listened to
        return f"no camera_info on {cam.info_topic}"
    return pipe.grid_problem


def _headline(cam: Camera, settings: Settings, new_rejects: int, new_failures: int
              ) -> tuple[int, str]:
    """(level, message) of a camera before the grid's trouble is added."""
    rate_in, rate_out = cam.received.rate(), cam.processed.rate()
    trust = cam.pipe.trust
    if cam.received.total == 0:
        return DiagnosticStatus.OK, f"waiting for images on {cam.input_topic}"
    if new_rejects:
        return DiagnosticStatus.WARN, f"rejected {new_rejects} malformed images"
    if new_failures:
        return DiagnosticStatus.WARN, f"{new_failures} frames failed"
    if trust is not None and trust < settings.trust_threshold:
        return DiagnosticStatus.WARN, (
            f"drivable trust {trust:.2f} below trust_threshold "
            f"{settings.trust_threshold:.2f}: {cam.pipe.trust_reason}")
    if rate_in == 0.0 and rate_out == 0.0:  # too few frames in the window for a rate
        return DiagnosticStatus.OK, (
            f"last image {time.monotonic() - cam.received.last:.1f} s ago on "
            f"{cam.input_topic}, {cam.processed.total} processed in all")
    return DiagnosticStatus.OK, f"{rate_in:.1f} Hz in, {rate_out:.1f} Hz out"


def _values(cam: Camera, seg: Segmenter, settings: Settings, grid: str | None
            ) -> dict[str, Any]:
    """The statistics of a camera (besides the recent counts)."""
    pipe = cam.pipe
    values: dict[str, Any] = {
        "input_rate_hz": f"{cam.received.rate():.2f}",
        "output_rate_hz": f"{cam.processed.rate():.2f}",
        "frames_received": cam.received.total, "frames_processed": cam.processed.total,
        "frames_skipped": cam.skipped.value, "frames_rejected": cam.rejected.value,
        "frames_failed": cam.failed.value, "frames_unwatched": cam.idle.value}
    for stage, window in cam.latency.items():
        for q in (50, 99):
            values[f"{stage}_p{q}_ms"] = f"{window.percentile_ms(q):.2f}"
    values.update({f"published_{key}": c.value for key, c in cam.published.items()})
    values["published_drivable_grid"] = cam.grid_published.value
    values["published_drivable_trust"] = cam.trust_published.value
    values["drivable_trust"] = (f"{pipe.trust:.3f}" if pipe.trust is not None else
                                "none yet" if seg.trust_model is not None else
                                "none (the checkpoint's card has no trust model)")
    values["trust_threshold"] = f"{settings.trust_threshold:.2f}"
    values["frames_low_trust"] = pipe.low_trust
    values["drivable_grid_problem"] = grid or "none"
    batch = cam.batch_size.percentile_ms(50) / 1000.0  # counts, not seconds
    values.update({
        "input_topic": cam.input_topic, "weights": str(seg.weights),
        "device": str(seg.device), "precision": str(seg.dtype).removeprefix("torch."),
        "network_input": network_input(settings, seg, pipe.focal_px),
        "batch_size_p50": "nan" if batch != batch else f"{batch:.0f}",
        "cuda_graphs": "on" if seg.cuda_graphs else
        (f"off ({seg.graph_error})" if seg.graph_error else "off"),
    })
    if cam.name:
        values["camera"] = cam.name
    return values


def camera_status(cam: Camera, seg: Segmenter, settings: Settings, *, node_name: str,
                  grid: str | None, callback_errors: int) -> DiagnosticStatus:
    """A camera's health and statistics; rejections and failures count as new once (the
    camera remembers what it reported). ``grid``: :func:`grid_trouble`."""
    rejected, failed = cam.rejected.value, cam.failed.value
    new_rejects, cam.rejected_reported = rejected - cam.rejected_reported, rejected
    new_failures, cam.failed_reported = failed - cam.failed_reported, failed
    level, message = _headline(cam, settings, new_rejects, new_failures)
    if grid:
        message = f"no drivable grid: {grid}" if level == DiagnosticStatus.OK else \
            f"{message}; no drivable grid: {grid}"
        level = DiagnosticStatus.WARN
    values = _values(cam, seg, settings, grid)
    values.update({"frames_rejected_recent": new_rejects, "frames_failed_recent": new_failures,
                   "frames_lost_before_node": cam.gaps.lost,
                   "callback_errors": callback_errors})
    return DiagnosticStatus(level=level, name=status_name(node_name, cam.name),
                            message=message, hardware_id=str(seg.device),
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
