"""One camera of the node: its topics, publishers and statistics around its ROS-free
:class:`~ssnet_ros.core.camera_pipeline.CameraPipeline` (calibration, pose, grid lookup,
trust)."""

from __future__ import annotations

from typing import Any

from sensor_msgs.msg import RelativeHumidity
from std_msgs.msg import Header

from ..core.camera_pipeline import CameraPipeline
from ..core.render import CHANNELS, Rendered
from ..core.stats import Counter, GapCounter, LatencyWindow, RateMeter
from ..core.trust import TrustModel
from .conversions import mono8_msg, rgb8_msg
from .parameters import OUTPUTS

STAGES = ("conversion", "inference", "publishing", "total")
"""The latency stages each camera's diagnostics report (p50, p99)."""


class Camera:
    """One camera's topics, publishers and statistics (``name`` "" = the single camera)."""

    def __init__(self, name: str, pose: tuple[float, ...] | None = None) -> None:
        self.name = name
        self.prefix = f"{name}/" if name else ""
        self.pipe = CameraPipeline(name, pose)
        """The camera's own state in the frame pipeline."""
        self.input_topic = ""
        self.info_topic = ""
        self.pubs: dict[str, Any] = {}
        self.trust_pub: Any = None
        self.received, self.skipped, self.rejected = RateMeter(), Counter(), Counter()
        self.failed, self.idle, self.processed = Counter(), Counter(), RateMeter()
        self.gaps = GapCounter()
        """Frames missing from the stamp sequence (lost before the node, estimated)."""
        self.published = {key: Counter() for key in OUTPUTS}
        self.grid_published = Counter()
        """Drivable grids this camera's frames went into."""
        self.trust_published = Counter()
        self.latency = {stage: LatencyWindow() for stage in STAGES}
        self.batch_size = LatencyWindow()
        """Frames segmented together with each frame (a window of counts, not seconds)."""
        self.rejected_reported = 0
        self.failed_reported = 0
        self.grid_problem_logged = False

    def wanted(self, publish: dict[str, bool]) -> set[str]:
        """Outputs switched on that someone subscribes to."""
        return {key for key, pub in self.pubs.items()
                if publish[key] and pub.get_subscription_count() > 0}

    def publish(self, result: Rendered, header: Header, want: set[str],
                trust_model: TrustModel | None) -> None:
        """Publish the outputs in ``want`` of a frame's ``result`` with its image's
        ``header``, and its drivable trust (variance: the trust model's squared residual)."""
        for key in OUTPUTS:
            if key in want:
                make = mono8_msg if CHANNELS[key] == 1 else rgb8_msg
                self.pubs[key].publish(make(result[key], header))
                self.published[key].add()
        if "drivable_trust" in want and self.pipe.trust is not None and trust_model:
            self.trust_pub.publish(RelativeHumidity(
                header=header, relative_humidity=self.pipe.trust,
                variance=float(trust_model.residual_std) ** 2))
            self.trust_published.add()

    def count(self, together: int, **seconds: float) -> None:
        """Count a processed frame, segmented with ``together`` frames, and its latency per
        stage (``seconds``: stage -> seconds)."""
        self.processed.tick()
        self.batch_size.add(float(together))
        for stage, value in seconds.items():
            self.latency[stage].add(value)

    def wants_trust(self) -> bool:
        """Someone subscribes to this camera's drivable trust."""
        return self.trust_pub is not None and self.trust_pub.get_subscription_count() > 0
