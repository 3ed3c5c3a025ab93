"""``ssnet-eval-bag``: segment every frame of recorded rosbag2 drives and score them.

For each input bag a new bag is written holding the input image topic and the node's outputs
(segmentation/labels, drivable_mask, overlay and, on request, confidence), each message with its
input frame's header and bag time. ``report.json`` and ``report.md`` give the frames, per-class
IoU, mIoU, drivable precision/recall/F1 (when ground truth is given), inference time
percentiles and the frames without ground truth. Metrics are those of ``ssnet-eval``.
With ``--ray`` the bags are spread over the workers of a Ray cluster, with the same outputs and
report (docs/bags.md, "Bag evaluation on Ray").

Exit status: 0 done; 1 an input bag is damaged (the frames before the damage were evaluated,
written and reported; an unreadable metadata.yaml is damage), holds no frame on the topic, or
its camera_info cannot give the drivable grid --camera-pose asked for; 2 nothing could be
done (bad arguments, unreadable bag, ...).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bagfile import STORAGES
from .evaluator import (BagResult, EvalOptions, build_report, check_run, evaluate_bag,
                        output_topic, report_markdown, trust_summary, write_trust_scatter)
from .truth import LABEL_FORMATS
from ..core import options as cli
from ..core.fileio import write_json, write_png, write_text
from ..core.ground_grid import Camera as GroundCamera
from ..core.ground_grid import GRID_FRAME, GridSpec
from ..core.visualize import alpha_weight

_GRID = GridSpec()  # the node's grid_* defaults are GridSpec's too
from ..core.segmenter import Segmenter
from ..errors import SSNetError

__all__ = ["BagResult", "EvalOptions", "build_parser", "build_report", "check_run",
           "evaluate_bag", "main", "output_topic", "report_markdown", "run"]


def run(segmenter: Segmenter, bags: Sequence[str | Path], out: str | Path,
        options: EvalOptions, input_size: tuple[int, int] | None = None
        ) -> dict[str, Any]:
    """Evaluate ``bags``: output bags ``out/<bag name>``, ``out/report.json`` and ``.md``."""
    out = Path(out)
    bags, outputs, truth = check_run(bags, out, options)
    t0 = time.perf_counter()
    results, failed = [], []
    for bag, output in zip(bags, outputs):
        try:
            results.append(evaluate_bag(segmenter, bag, output, options))
        except SSNetError as exc:  # one unusable bag must not discard the others' work
            if len(bags) == 1:
                raise
            failed.append({"bag": str(bag), "reason": str(exc)})
    if not results:
        raise SSNetError("no bag could be evaluated: " + "; ".join(
            f"{f['bag']}: {f['reason']}" for f in failed))
    report = build_report(results, segmenter, options, time.perf_counter() - t0, input_size,
                          truth)
    report["failed_bags"] = failed
    for result in results:
        if result.panels:
            folder = out / f"{result.output.name}_panels"
            if folder.exists():  # --overwrite was checked above with the bag itself
                shutil.rmtree(folder)
            for name, pic in result.panels:
                write_png(folder / name, pic)
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report))
    write_trust_scatter(out, results)
    return report


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-eval-bag."""
    p = cli.parser("ssnet-eval-bag", __doc__)
    p.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories (or .mcap/.db3)")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for the output bags (one per input, named like it) and reports")
    p.add_argument("--topic", default=None,
                   help="image topic (Image or CompressedImage); default: the only one")
    truth = p.add_mutually_exclusive_group()
    truth.add_argument("--truth-topic", default=None,
                       help="topic of mono8 label images, matched to frames by header stamp")
    truth.add_argument("--truth-dir", type=Path, default=None,
                       help="folder of label PNGs named like the source images or by stamp")
    p.add_argument("--label-format", choices=LABEL_FORMATS, default=None,
                   help="how --truth-dir PNGs encode classes (default raw: class ids)")
    cli.add(p, "--weights", "--device", "--precision", "--input-height", "--input-width")
    p.add_argument("--drivable-classes", nargs="+", default=None,
                   help="class names counted as drivable (default: the checkpoint's)")
    cli.add(p, "--drivable-floor", "--drivable-connected", "--batch-size")
    p.add_argument("--confidence", action="store_true",
                   help="also write segmentation/confidence")
    p.add_argument("--overlays", type=int, default=6,
                   help="pictures per bag under OUT/<bag>_panels: the worst frames by drivable "
                        "IoU and a spread (a spread only without ground truth)")
    p.add_argument("--overlay-alpha", type=float, default=0.5,
                   help="opacity of the class colours in the overlay topic")
    p.add_argument("--namespace", default="/", help="namespace of the output topics")
    p.add_argument("--camera-pose", nargs=6, type=float, default=None,
                   metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                   help="the camera body frame's pose in the grid frame (metres, radians; "
                        "REP 103, as the node's camera_pose): bags with camera_info beside "
                        "the image topic get segmentation/drivable_grid")
    p.add_argument("--grid-frame", default=GRID_FRAME,
                   help="frame_id of the drivable grid, the frame --camera-pose is given in")
    p.add_argument("--grid-resolution", type=float, default=_GRID.resolution,
                   help="metres per cell of the drivable grid")
    p.add_argument("--grid-x-range", nargs=2, type=float, default=list(_GRID.x_range),
                   metavar=("MIN", "MAX"), help="metres along the grid frame's x covered")
    p.add_argument("--grid-y-range", nargs=2, type=float, default=list(_GRID.y_range),
                   metavar=("MIN", "MAX"), help="metres along the grid frame's y covered")
    p.add_argument("--storage", choices=STORAGES, default=None,
                   help="storage of the output bags (default: that of the input)")
    cli.add(p, "--limit", "--overwrite", "--no-progress", "--threads")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="evaluate the bags on Ray, one bag at a time per worker: alone a local "
                        "Ray instance on this machine, auto the running cluster, or a "
                        "ray://HEAD:10001 address (needs the ray extra)")
    p.add_argument("--retries", type=int, default=None,
                   help="with --ray: new attempts at a bag whose worker died (default: 2)")
    p.add_argument("--resume", action="store_true",
                   help="with --ray: keep the bags an earlier run into the same --out "
                        "completed and evaluate only the others")
    return p


@cli.entry_point("ssnet-eval-bag", prefix="error: ", interrupted=(
    "bags completed before it are kept, the bag in progress was not written (with --ray, "
    "--resume does the rest)"))
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-eval-bag."""
    args = build_parser().parse_args(argv)
    prog = "ssnet-eval-bag"
    size = cli.input_size(args)
    rule = cli.drivable_rule(args)
    try:
        alpha_weight(args.overlay_alpha)
    except SSNetError as exc:
        raise cli.UsageError(f"--overlay-alpha: {exc}") from None
    if args.ray is None and (args.resume or args.retries is not None):
        raise cli.UsageError("--resume and --retries need --ray")
    args.retries = 2 if args.retries is None else args.retries
    if args.retries < 0 or args.threads < 0:
        raise cli.UsageError("--retries and --threads must be >= 0")
    grid = GridSpec(args.grid_resolution, tuple(args.grid_x_range), tuple(args.grid_y_range))
    if args.camera_pose:
        GroundCamera((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), 1, 1,
                     tuple(args.camera_pose))
    options = EvalOptions(topic=args.topic, truth_topic=args.truth_topic,
                          truth_dir=args.truth_dir, label_format=args.label_format,
                          batch_size=args.batch_size, confidence=args.confidence,
                          overlay_alpha=args.overlay_alpha, storage=args.storage,
                          overlays=args.overlays,
                          namespace=args.namespace, overwrite=args.overwrite,
                          limit=args.limit or None,
                          progress=not args.no_progress,
                          camera_pose=tuple(args.camera_pose) if args.camera_pose else None,
                          grid=grid, grid_frame=args.grid_frame)
    for bag in args.bags:  # fail fast, before loading the model
        if not bag.exists():
            raise SSNetError(f"bag {bag} does not exist")
    if args.ray is not None:
        from .distributed import RayOptions, run_on_ray

        report = run_on_ray(args.bags, args.out, options, RayOptions(
            address=args.ray, weights=args.weights, device=args.device,
            precision=args.precision, input_size=size,
            drivable_classes=args.drivable_classes, drivable_rule=rule,
            threads=args.threads,
            retries=args.retries, resume=args.resume))
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        segmenter = Segmenter(args.weights, device=args.device, precision=args.precision,
                              input_size=size, drivable_classes=args.drivable_classes,
                              drivable_rule=rule)
        report = run(segmenter, args.bags, args.out, options, size)
    print(report_markdown(report))
    print(f"outputs and report written to {args.out}")
    for retry in report.get("retried_bags", []):  # --ray only
        print(f"{prog}: bag {retry['bag']} was retried after: {'; '.join(retry['reasons'])}",
              file=sys.stderr)
    for failure in report["failed_bags"]:
        print(f"{prog}: error: bag {failure['bag']} was not evaluated: {failure['reason']}",
              file=sys.stderr)
    damaged = [b for b in report["bags"] if b["damage"]]
    for b in damaged:
        print(f"{prog}: error: bag {b['path']} is damaged: {b['damage']}; the "
              f"{b['frames']} frames before the damage were evaluated and written to "
              f"{b['output']}", file=sys.stderr)
    empty = [b for b in report["bags"] if b["frames"] == 0]
    for b in empty:
        print(f"{prog}: error: bag {b['path']} has no frames on {b['topic']}", file=sys.stderr)
    no_grid = [b for b in report["bags"] if b.get("drivable_grid_problem")]
    for b in no_grid:
        print(f"{prog}: error: bag {b['path']}: no drivable grid written: "
              f"{b['drivable_grid_problem']}", file=sys.stderr)
    return 1 if damaged or report["failed_bags"] or empty or no_grid else 0


if __name__ == "__main__":
    sys.exit(main())
