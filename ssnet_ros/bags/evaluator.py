"""One bag through the model: the evaluator behind ``ssnet-eval-bag`` (sequential and on
Ray), its options, the per-bag result and the run's report (report.json and report.md).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import messages as bm
from .messages import OCCUPANCY_GRID
from .bagfile import (STORAGES, BagReader, BagWriter, RawMessage, check_output, image_topic,
                     qos)
from .truth import (FRAME_NAMES_KEY, LABEL_FORMAT_KEY, LABEL_FORMATS, TruthFolder,
                        TruthSource, TruthTopic, frame_names)
from ..datasets import DATASETS
from ..errors import SSNetError
from ..core.fileio import check_file_output
from ..core.metrics import confusion_matrix, image_scores, markdown_report, summarize
from ..core.segmenter import Segmenter
from ..core.camera_pipeline import Calibration, CameraPipeline, Frame, Pipeline, TrustPolicy
from ..core.ground_grid import GRID_FRAME, GridSpec
from ..core.render import GRID_TOPIC, Rendered
from ..core.render import OUTPUT_TOPICS as NODE_TOPICS
from ..core.decode import camera_info_topic
from ..core.stats import fmt as _fmt
from ..core.stats import ms_summary as _ms
from ..core.trust import save_trust_scatter, trust_scores
from ..core.visualize import panel, truth_panel

#: Output topics (relative to --namespace), as the node names them.
OUTPUT_TOPICS = {key: NODE_TOPICS[key] for key in ("labels", "drivable_mask", "overlay",
                                                    "confidence")}
OUTPUT_QOS = qos(True, 2)
"""The node's output QoS: reliable, keep last 2."""
MAX_LISTED = 50
"""Frames listed by stamp in the report (e.g. those without ground truth)."""


@dataclass
class EvalOptions:
    """How to evaluate bags (the command-line options of ssnet-eval-bag)."""

    topic: str | None = None
    """Image topic; None: the bag's only Image or CompressedImage topic."""
    truth_topic: str | None = None
    truth_dir: Path | None = None
    label_format: str | None = None
    """Format of --truth-dir PNGs; None: the bag's recorded format, else raw."""
    batch_size: int = 4
    confidence: bool = False
    overlay_alpha: float = 0.5
    storage: str | None = None
    """Output storage (mcap, sqlite3); None: that of the input bag."""
    namespace: str = "/"
    overwrite: bool = False
    limit: int | None = None
    progress: bool = True
    overlays: int = 6
    """Pictures per bag: with ground truth the worst frames by drivable IoU and a spread over
    the bag, without it a spread (each under ``out/<bag>_panels/``)."""
    camera_pose: tuple[float, ...] | None = None
    """The camera body frame's [x, y, z, roll, pitch, yaw] in grid_frame: with the bag's
    camera_info, each output bag gets segmentation/drivable_grid (None: no grid)."""
    grid: GridSpec = field(default_factory=GridSpec)
    grid_frame: str = GRID_FRAME


@dataclass
class BagResult:
    """What happened to one input bag."""

    path: Path
    output: Path
    topic: str
    msgtype: str
    frames: int = 0
    rejected: list[str] = field(default_factory=list)
    scored: int = 0
    without_truth: list[int] = field(default_factory=list)
    truth_problems: list[str] = field(default_factory=list)
    truth_unmatched: int = 0
    damage: str | None = None
    notes: list[str] = field(default_factory=list)
    matrix: np.ndarray | None = None
    times: list[float] = field(default_factory=list)
    stamps_first_last: tuple[int, int] | None = None
    panels: list[tuple[str, np.ndarray]] = field(default_factory=list)
    """(file name, picture) to write under ``out/<bag>_panels/``."""
    grids: int = 0
    """segmentation/drivable_grid messages written."""
    trust: list[float] = field(default_factory=list)
    """Drivable trust of every segmented frame (empty without a trust model)."""
    trust_iou: list[list[float]] = field(default_factory=list)
    """[drivable trust, true drivable IoU] of every scored frame (with a trust model)."""
    grid_problem: str | None = None
    """Why a drivable grid asked for (--camera-pose) could not be written."""


def output_topic(namespace: str, key: str) -> str:
    """The full name of output ``key`` under ``namespace`` (/segmentation/labels at /)."""
    ns = "/" + namespace.strip("/")
    return f"{ns.rstrip('/')}/{OUTPUT_TOPICS[key]}"


def _check_label_space(segmenter: Segmenter, fmt: str | None) -> None:
    if fmt in DATASETS and tuple(segmenter.class_names) != DATASETS[fmt].info.class_names:
        raise SSNetError(f"the ground truth holds {fmt} labels but the model's classes are "
                         f"{', '.join(segmenter.class_names)}")


@dataclass
class _Frame:
    raw: RawMessage
    msg: Any
    rgb: np.ndarray | None
    calibration: Calibration | None = None
    """The latest camera_info before this frame (None: none yet)."""
    frame: Frame | None = None
    """The frame as the pipeline takes it."""


class _BagEvaluator:
    """Segments one bag's frames in batches and writes the output bag."""

    def __init__(self, segmenter: Segmenter, reader: BagReader, writer: BagWriter,
                 result: BagResult, truth: TruthSource | None, options: EvalOptions,
                 on_frames: Callable[[int], None] | None = None) -> None:
        self.seg, self.reader, self.writer = segmenter, reader, writer
        self.result, self.truth, self.opt = result, truth, options
        self.on_frames = on_frames
        self.k = segmenter.card.num_classes
        self.names = frame_names(reader.custom)
        self.topics = {key: output_topic(options.namespace, key) for key in OUTPUT_TOPICS
                       if key != "confidence" or options.confidence}
        result.matrix = np.zeros((self.k, self.k), np.int64)
        self.index = 0
        self.spread_at: set[int] = set()
        self.worst: list[tuple[float, int, str, np.ndarray]] = []  # kept sorted, bounded
        self.spread: list[tuple[int, str, np.ndarray]] = []
        self.info_topic = camera_info_topic(result.topic.removesuffix("/compressed"))
        if self.info_topic not in reader.topics:
            self.info_topic = None
        self.calibration: Calibration | None = None
        self.refused: Calibration | None = None
        """The calibration that gave no grid (said once)."""
        self.grid_topic = "/" + "/".join(p for p in (options.namespace.strip("/"), GRID_TOPIC)
                                         if p)
        self.camera = CameraPipeline(result.topic, options.camera_pose)
        self.pipeline = Pipeline(segmenter, options.grid)
        self.outputs = tuple(self.topics)

    def run(self) -> None:
        """Read, segment, write and score every frame (up to --limit)."""
        r, opt = self.result, self.opt
        info = self.reader.topics[r.topic]
        self.writer.add_topic(r.topic, r.msgtype, info.qos)
        for topic in self.topics.values():
            self.writer.add_topic(topic, bm.IMAGE, [OUTPUT_QOS])
        if self.info_topic:
            self.writer.add_topic(self.info_topic, bm.CAMERA_INFO,
                                  self.reader.topics[self.info_topic].qos)
            if opt.camera_pose:
                self.writer.add_topic(self.grid_topic, OCCUPANCY_GRID, [OUTPUT_QOS])
        total = info.count if opt.limit is None else min(info.count or opt.limit, opt.limit)
        n_spread = opt.overlays if self.truth is None else opt.overlays // 2
        if total and n_spread:
            self.spread_at = {round(j * (total - 1) / max(1, n_spread - 1))
                              for j in range(n_spread)}
        bar = tqdm(total=total, desc=f"segment {self.reader.name}", unit="frame",
                   disable=not opt.progress, file=sys.stderr)
        batch: list[_Frame] = []
        topics = [r.topic] + ([self.info_topic] if self.info_topic else [])
        for raw in self.reader.messages(topics):
            # a full batch waits for the first message of a later bag time: the camera_info
            # recorded with a frame's stamp may come just after the frame
            if len(batch) >= opt.batch_size and raw.timestamp > batch[-1].raw.timestamp:
                self._flush(batch)  # rejected frames count: memory stays bounded
                self._progress(bar, len(batch))
                batch = []
            if raw.topic != r.topic:
                self._camera_info(raw)
                continue
            if opt.limit is not None and r.frames >= opt.limit:
                break
            r.frames += 1
            batch.append(self._decode(raw))
        self._flush(batch)
        self._progress(bar, len(batch))
        bar.close()
        r.damage = self.reader.damage
        r.notes = list(self.reader.notes)
        if self.info_topic and not opt.camera_pose:
            r.notes.append(f"the bag has camera_info on {self.info_topic}; give --camera-pose "
                           f"X Y Z ROLL PITCH YAW (e.g. --camera-pose 0 0 1.65 0 0 0, a level "
                           f"camera 1.65 m above the road) to write {self.grid_topic}")
        elif opt.camera_pose and not self.info_topic:
            r.notes.append(f"no drivable grid: the bag has no camera_info beside {r.topic}")
        r.panels = [(f"{i:02d}_worst_{name}.png", pic) for i, (_, _, name, pic)
                    in enumerate(self.worst)]
        r.panels += [(f"{len(r.panels) + i:02d}_frame_{name}.png", pic)
                     for i, (_, name, pic) in enumerate(sorted(self.spread, key=lambda x: x[0]))]
        if self.truth is not None:
            r.truth_problems = list(self.truth.problems)
            r.truth_unmatched = self.truth.unmatched()

    def _progress(self, bar: tqdm, frames: int) -> None:
        bar.update(frames)
        if self.on_frames is not None and frames:
            self.on_frames(frames)

    def _camera_info(self, raw: RawMessage) -> None:
        """Copy a camera_info message to the output bag; keep it for the next frames."""
        self.writer.write_raw(raw.topic, raw.timestamp, raw.data)
        try:
            self.calibration = bm.to_calibration(bm.deserialize(raw.data, raw.msgtype))
        except SSNetError as exc:
            self.result.rejected.append(f"camera_info at bag time {raw.timestamp}: {exc}")

    def _grid(self, frame: _Frame, result: Rendered) -> None:
        """Write the frame's drivable grid (its calibration, --camera-pose), as the node
        fuses it for its one camera."""
        if frame.calibration is None or not self.opt.camera_pose or \
                frame.calibration == self.refused:
            return
        grid, _, _ = self.pipeline.fuse_grid([frame.frame], [result])
        if grid is None:  # said once per calibration
            problem = self.camera.calibration_problem or self.camera.grid_problem
            self.refused = frame.calibration
            self.result.rejected.append(f"camera_info on {self.info_topic}: {problem}")
            self.result.grid_problem = f"camera_info on {self.info_topic}: {problem}"
            return
        msg = bm.occupancy_grid(grid, self.opt.grid, bm.header(
            bm.stamp_ns(frame.msg.header), self.opt.grid_frame))
        self.writer.write(self.grid_topic, frame.raw.timestamp, msg)
        self.result.grids += 1

    def _decode(self, raw: RawMessage) -> _Frame:
        try:
            msg = bm.deserialize(raw.data, raw.msgtype)
            return _Frame(raw, msg, bm.to_rgb(msg), self.calibration)
        except SSNetError as exc:
            self.result.rejected.append(f"bag time {raw.timestamp}: {exc}")
            return _Frame(raw, None, None)

    def _flush(self, batch: list[_Frame]) -> None:
        """Segment a batch through the node's frame pipeline (frames of one calibration
        together, as the node's camera would see them) and write and score each frame."""
        for frame in batch:  # frames before the first camera_info take the first one
            frame.calibration = frame.calibration or self.calibration
        good = [f for f in batch if f.rgb is not None]
        results: dict[int, Rendered] = {}
        for calibration, group in itertools.groupby(good, key=lambda f: f.calibration):
            frames = list(group)
            self.camera.set_calibration(calibration)
            t0 = time.perf_counter()
            for f in frames:
                f.frame = Frame(self.camera, f.rgb, bm.stamp_ns(f.msg.header),
                                f.msg.header.frame_id)
            out = self.pipeline.run([f.frame for f in frames], self.outputs,
                                    overlay_alpha=self.opt.overlay_alpha,
                                    trust=TrustPolicy(enabled=True))
            per_frame = (time.perf_counter() - t0) / len(frames)
            self.result.times.extend([per_frame] * len(frames))
            for f, result in zip(frames, out.outputs):
                self._grid(f, result)
                results[id(f)] = result
        for frame in batch:
            self.writer.write_raw(self.result.topic, frame.raw.timestamp, frame.raw.data)
            if frame.rgb is not None:
                self._write_and_score(frame, results[id(frame)])

    def _write_and_score(self, frame: _Frame, result: Rendered) -> None:
        hdr, ts, w = frame.msg.header, frame.raw.timestamp, self.writer
        for key, topic in self.topics.items():  # the node's arrays, as the node sends them
            w.write(topic, ts, bm.image(result[key], hdr))
        labels, over = result["labels"], result["overlay"]
        drivable = result["drivable_mask"] > 0
        trust = result.get("drivable_trust")
        stamp = bm.stamp_ns(hdr)
        r = self.result
        if trust is not None:
            r.trust.append(float(trust))
        first = r.stamps_first_last[0] if r.stamps_first_last else stamp
        r.stamps_first_last = (first, stamp)
        index, self.index = self.index, self.index + 1
        name = self.names.get(stamp) or str(stamp)
        if self.truth is None:
            if index in self.spread_at:
                self.spread.append((index, name, panel(
                    frame.rgb, over, drivable,
                    self.seg.class_names, self.seg.palette,
                    title=f"{self.reader.name} frame {index} ({name})")))
            return
        try:
            truth = self.truth.get(stamp, self.names.get(stamp))
        except SSNetError as exc:
            self.truth.problems.append(str(exc))
            truth = None
        if truth is None:
            r.without_truth.append(stamp)
        elif truth.shape != labels.shape:
            self.truth.problems.append(
                f"labels stamped {stamp} are {truth.shape[1]}x{truth.shape[0]} but the frame "
                f"is {labels.shape[1]}x{labels.shape[0]}")
            r.without_truth.append(stamp)
        else:
            assert r.matrix is not None
            r.matrix += confusion_matrix(labels, truth, self.k)
            r.scored += 1
            if trust is not None:
                _, iou = image_scores(labels, truth, self.seg.drivable_ids)
                r.trust_iou.append([float(trust), iou])
            self._keep_panel(index, name, frame.rgb, labels, truth)

    def _keep_panel(self, index: int, name: str, rgb: np.ndarray, labels: np.ndarray,
                    truth: np.ndarray) -> None:
        """Keep this frame's picture if it is among the worst or on the spread."""
        accuracy, iou = image_scores(labels, truth, self.seg.drivable_ids)
        n_worst = self.opt.overlays - self.opt.overlays // 2
        in_worst = n_worst and (len(self.worst) < n_worst or iou < self.worst[-1][0])
        if not in_worst and index not in self.spread_at:
            return
        caption = (f"{self.reader.name} frame {index} ({name}): drivable IoU "
                   f"{100 * iou:.1f}%, pixel accuracy {100 * accuracy:.1f}%")
        pic = truth_panel(rgb, labels, truth, self.seg.palette, self.seg.class_names, caption)
        if in_worst:
            self.worst.append((iou, index, name, pic))
            self.worst.sort(key=lambda x: (x[0], x[1]))
            del self.worst[n_worst:]
        if index in self.spread_at:
            self.spread.append((index, name, pic))


def _truth_for(reader: BagReader, segmenter: Segmenter, opt: EvalOptions
               ) -> TruthSource | None:
    recorded = reader.custom.get(LABEL_FORMAT_KEY)
    if opt.truth_topic:
        _check_label_space(segmenter, recorded)
        return TruthTopic(reader, opt.truth_topic)
    if opt.truth_dir:
        fmt = opt.label_format or "raw"
        _check_label_space(segmenter, fmt)
        return TruthFolder(opt.truth_dir, fmt)
    return None


def evaluate_bag(segmenter: Segmenter, bag: str | Path, output: str | Path,
                 options: EvalOptions, on_frames: Callable[[int], None] | None = None
                 ) -> BagResult:
    """Segment one bag into a new bag at ``output``; score it against the ground truth.
    ``on_frames(n)`` is called after each batch of ``n`` frames (progress of a Ray worker)."""
    with BagReader(bag) as reader:
        topic = image_topic(reader, options.topic,
                                 [options.truth_topic] if options.truth_topic else [])
        result = BagResult(Path(bag), Path(output), topic, reader.topics[topic].msgtype)
        truth = _truth_for(reader, segmenter, options)
        custom = {
            "ssnet_ros.source_bag": str(Path(bag).resolve()),
            "ssnet_ros.class_names": json.dumps(list(segmenter.class_names)),
            "ssnet_ros.drivable_ids": json.dumps(list(segmenter.drivable_ids)),
            "ssnet_ros.weights": str(segmenter.weights),
        }
        if FRAME_NAMES_KEY in reader.custom:
            custom[FRAME_NAMES_KEY] = reader.custom[FRAME_NAMES_KEY]
        with BagWriter(output, storage=options.storage or reader.storage,
                       overwrite=options.overwrite, custom=custom) as writer:
            _BagEvaluator(segmenter, reader, writer, result, truth, options, on_frames).run()
    return result


def _scores(matrix: np.ndarray | None, scored: int, segmenter: Segmenter
            ) -> dict[str, Any] | None:
    if matrix is None or scored == 0:
        return None
    return summarize(matrix, segmenter.class_names, segmenter.drivable_ids)


def build_report(results: Sequence[BagResult], segmenter: Segmenter, options: EvalOptions,
                 seconds: float, input_size: tuple[int, int] | None,
                 truth: str | None) -> dict[str, Any]:
    """report.json's content."""
    k = segmenter.card.num_classes
    matrix = np.zeros((k, k), np.int64)
    for r in results:
        if r.matrix is not None:
            matrix += r.matrix
    times = [t for r in results for t in r.times]
    scored = sum(r.scored for r in results)
    without = [s for r in results for s in r.without_truth]
    frames = sum(r.frames for r in results)
    return {
        "tool": "ssnet-eval-bag",
        "frames": frames,
        "frames_segmented": len(times),
        "frames_rejected": sum(len(r.rejected) for r in results),
        "frames_scored": scored,
        "frames_without_truth": len(without) if truth else None,
        "frames_without_truth_stamps": without[:MAX_LISTED] if truth else None,
        "truth": truth,
        "metrics": _scores(matrix, scored, segmenter),
        "inference_ms_per_frame": _ms(times),
        "seconds": seconds,
        "frames_per_second": len(times) / seconds if seconds > 0 else None,
        "damaged": any(r.damage for r in results),
        "bags": [{
            "path": str(r.path), "output": str(r.output), "topic": r.topic,
            "msgtype": r.msgtype, "frames": r.frames, "frames_segmented": len(r.times),
            "frames_rejected": len(r.rejected), "rejected": r.rejected[:MAX_LISTED],
            "frames_scored": r.scored,
            "frames_without_truth": len(r.without_truth) if truth else None,
            "truth_problems": r.truth_problems[:MAX_LISTED],
            "truth_unmatched": r.truth_unmatched if truth else None,
            "first_stamp_ns": r.stamps_first_last[0] if r.stamps_first_last else None,
            "last_stamp_ns": r.stamps_first_last[1] if r.stamps_first_last else None,
            "damage": r.damage, "notes": r.notes, "drivable_grids": r.grids,
            "drivable_grid_problem": r.grid_problem,
            "metrics": _scores(r.matrix, r.scored, segmenter),
        } for r in results],
        "weights": str(segmenter.weights),
        "model": segmenter.card.model,
        "class_names": list(segmenter.class_names),
        "drivable_classes": list(segmenter.card.drivable_classes),
        "drivable_rule": {"floor": segmenter.drivable_rule.floor,
                          "connected": segmenter.drivable_rule.connected},
        "input_size": list(input_size) if input_size else (
            "automatic" if segmenter.card.input_rule else "native"),
        "device": str(segmenter.device),
        "precision": str(segmenter.dtype).removeprefix("torch."),
        "batch_size": options.batch_size,
        "drivable_trust": trust_summary(results, segmenter),
        "confusion_matrix": matrix.tolist(),
    }


def trust_summary(results: Sequence[BagResult], segmenter: Segmenter) -> dict[str, Any] | None:
    """The frames' drivable trust (mean, lowest, frames below 0.5) and, where truth exists,
    its agreement with the true drivable IoU; None without a trust model."""
    if segmenter.trust_model is None:
        return None
    values = [t for r in results for t in r.trust]
    pairs = np.array([p for r in results for p in r.trust_iou], np.float64).reshape(-1, 2)
    return {"frames": len(values),
            "mean": float(np.mean(values)) if values else None,
            "min": float(np.min(values)) if values else None,
            "vs_true_iou": trust_scores(pairs[:, 0], pairs[:, 1]) if len(pairs) else None}


def write_trust_scatter(out: Path, results: Sequence[BagResult]) -> None:
    """out/trust_scatter.png: drivable trust against true drivable IoU of the scored frames
    (one colour per bag); nothing when no frame has both."""
    pairs = [(p, Path(r.path).name) for r in results for p in r.trust_iou]
    if pairs:
        save_trust_scatter(out / "trust_scatter.png", [p[0] for p, _ in pairs],
                           [p[1] for p, _ in pairs], "ssnet-eval-bag", [b for _, b in pairs])


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: the same figures as report.json, for people."""
    names = ", ".join(Path(b["path"]).name for b in report["bags"])
    topics = ", ".join(sorted({b["topic"] for b in report["bags"]}))
    lines: list[str] = []
    if report["metrics"] is not None:
        summary = {**report["metrics"], "images": report["frames_scored"], "dataset": names,
                   "split": topics.lstrip("/")}
        lines.append(markdown_report(summary, f"{report['model']} on {names}").rstrip("\n"))
    else:
        lines += [f"# {report['model']} on {names}", "", "No ground truth: no scores."]
    t = report["inference_ms_per_frame"]
    size = report["input_size"]
    size = "x".join(map(str, size)) if isinstance(size, list) else size
    lines += ["", "## Frames", "", "| | |", "|---|---:|",
              f"| frames read | {report['frames']} |",
              f"| frames segmented | {report['frames_segmented']} |",
              f"| frames rejected (malformed) | {report['frames_rejected']} |",
              f"| frames scored | {report['frames_scored']} |"]
    if report["truth"]:
        lines.append(f"| frames without ground truth | {report['frames_without_truth']} |")
    lines += ["", f"Ground truth: {report['truth'] or 'none'}.", "",
              "## Inference time per frame", "",
              f"Batches of {report['batch_size']} on {report['device']} "
              f"({report['precision']}), network input {size}; "
              f"{_fmt(report['frames_per_second'], 2)} frames/s overall.", "",
              "| p50 ms | p90 ms | p99 ms | max ms | mean ms |", "|---:|---:|---:|---:|---:|",
              f"| {_fmt(t['p50'])} | {_fmt(t['p90'])} | {_fmt(t['p99'])} | {_fmt(t['max'])} | "
              f"{_fmt(t['mean'])} |", "", "## Bags", "",
              "| bag | topic | frames | scored | without truth | output | damage |",
              "|---|---|---:|---:|---:|---|---|"]
    for b in report["bags"]:
        without = "n/a" if b["frames_without_truth"] is None else b["frames_without_truth"]
        lines.append(f"| {b['path']} | {b['topic']} | {b['frames']} | {b['frames_scored']} | "
                     f"{without} | {b['output']} | {b['damage'] or 'none'} |")
    trust = report.get("drivable_trust")
    if trust and trust["frames"]:
        lines += ["", "## Drivable trust", "",
                  f"{trust['frames']} frames: mean {_fmt(trust['mean'], 3)}, lowest "
                  f"{_fmt(trust['min'], 3)} (docs/trust.md)."]
        vs = trust["vs_true_iou"]
        if vs:
            lines.append(f"Against the true drivable IoU of {vs['frames']} scored frames "
                         f"({vs['frames_iou_below_70']} below 70): Spearman "
                         f"{_fmt(vs['spearman'], 3)}, AUROC for IoU < 70 "
                         f"{_fmt(vs['auroc_iou_below_70'], 3)}, R² {_fmt(vs['r2'], 3)} "
                         f"(trust_scatter.png).")
    problems = [p for b in report["bags"] for p in b["truth_problems"] + b["rejected"]]
    problems = [f"bag {f['bag']} was not evaluated: {f['reason']}"
                for f in report.get("failed_bags", [])] + problems
    problems += [f"bag {r['bag']} was retried ({r['attempts']} attempts) after: "
                 f"{'; '.join(r['reasons'])}" for r in report.get("retried_bags", [])]
    notes = [f"{Path(b['path']).name}: {n}" for b in report["bags"] for n in b["notes"]]
    if notes:  # e.g. how to get the drivable grid (printed on the console with the report)
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes[:MAX_LISTED]]
    if report.get("resumed_bags"):  # ssnet-eval-bag --ray --resume
        lines += ["", "Taken from an earlier run (--resume), not redone: "
                  + ", ".join(report["resumed_bags"]) + "."]
    if problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in problems[:MAX_LISTED]]
    return "\n".join(lines) + "\n"


def check_run(bags: Sequence[str | Path], out: str | Path, options: EvalOptions,
              resume: bool = False) -> tuple[list[Path], list[Path], str | None]:
    """Check a run's options and outputs before anything is written; return the input bags,
    their output bags and the ground truth in words. With ``resume`` (ssnet-eval-bag --ray
    --resume) existing output bags are left to the caller and the report files are replaced."""
    out = Path(out)
    if options.batch_size < 1:
        raise SSNetError(f"batch size must be >= 1, got {options.batch_size}")
    if options.storage is not None and options.storage not in STORAGES:
        raise SSNetError(f"storage {options.storage!r} is not one of {', '.join(STORAGES)}")
    if options.truth_topic and options.truth_dir:
        raise SSNetError("give ground truth as a topic or as a folder, not both")
    if options.label_format is not None and options.label_format not in LABEL_FORMATS:
        raise SSNetError(f"label format {options.label_format!r} is not one of "
                         f"{', '.join(LABEL_FORMATS)}")
    bags = [Path(b) for b in bags]
    if not bags:
        raise SSNetError("no input bag given")
    outputs = [out / (b.stem if b.is_file() else b.name) for b in bags]
    if len({o.name for o in outputs}) != len(outputs):
        raise SSNetError("two input bags have the same name; evaluate them into different "
                         "--out folders")
    for path in outputs:
        check_output(path, options.overwrite or resume)
        panels = path.parent / f"{path.name}_panels"
        if panels.exists() and not (options.overwrite or resume):
            raise SSNetError(f"output {panels} exists; pass --overwrite to replace it")
    for path in (out / "report.json", out / "report.md"):
        check_file_output(path, options.overwrite or resume)
    for bag, output in zip(bags, outputs):
        if output.resolve() == bag.resolve():
            raise SSNetError(f"output {output} would replace input bag {bag}")
    truth = (f"topic {options.truth_topic} (matched by header stamp)" if options.truth_topic
             else f"folder {options.truth_dir} (matched by name or stamp)"
             if options.truth_dir else None)
    return bags, outputs, truth
