"""``ssnet-calibrate``: choose an offset on the drivable classes' logits of a trained stage, on
labelled training frames the stage never drew, and write the calibrated checkpoint.

    ssnet-calibrate --weights runs/stage4/final.pt --samples runs/stage4/samples_rank0.jsonl \\
        --out runs/stage4_calibrated

A stage trained with class weights that favour the rare classes under-calls Road on frames it
never saw (stage 4: Cityscapes hold-out recall 84 % at 94 % precision). Adding a constant to the
drivable classes' logits moves the whole Road/not-Road decision; this tool measures it per
offset. The frames come from the training splits of ``--domain`` that the run's
``--log-samples`` file (``samples_rank<R>.jsonl``) shows it never drew, evenly spaced: never a
hold-out, so the stage criterion's figures stay clean. The network runs once per frame; every
offset is decided from its logits exactly as the Segmenter decides labels (arg-max, then the
nearest resize), and scored as ssnet-eval scores the drivable mask.

The choice: the offset with the best mean drivable IoU over the domains among those that keep
the drivable precision of every domain at ``--min-precision`` or above (0 when none does).
The offset goes into the classifier's bias, so every path (node, bag tools, export) runs it;
the card's ``training.calibration`` records it with the figures. Writes OUT/calibrated.pt,
OUT/calibration.json, OUT/calibration.md and OUT/calibration.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..core import options as cli
from ..core.checkpoint import FRAMES_OF, load_checkpoint, save_checkpoint
from ..core.drivable import OFF
from ..core.fileio import atomic_path, write_json, write_text
from ..core.preprocessing import resize_nearest
from ..core.segmenter import Segmenter
from ..datasets import SegmentationDataset, open_dataset
from ..errors import SSNetError
from .drivable_curve import counts, parse_domain, scores, truth_lut

DEFAULT_DOMAINS = ("cityscapes_p2p:train", "idd_lite:train")
DEFAULT_OFFSETS = "0,0.25,0.5,0.75,1.0,1.25,1.5"
DEFAULT_FRAMES = 30
DEFAULT_MIN_PRECISION = 0.9
CLASSIFIER_BIAS = "classifier.bias"
"""The state-dict key of the last layer's bias in every model the project builds."""


def parse_offsets(text: str) -> list[float]:
    """``0,0.5,1`` -> sorted unique offsets (0 is always included)."""
    try:
        values = {float(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise cli.UsageError(f"--offsets {text!r} is not a comma-separated list of numbers") \
            from None
    if any(not -10.0 <= v <= 10.0 for v in values):
        raise cli.UsageError(f"--offsets {text!r}: every offset must be within -10..10")
    return sorted(values | {0.0})


def drawn_frames(samples: Sequence[Path], dataset_names: Sequence[str]) -> dict[str, set[int]]:
    """Dataset name -> the frame indices a run drew, from its ``samples_rank<R>.jsonl`` files
    (``picks`` are (index into the card's training datasets, frame index) pairs)."""
    drawn: dict[str, set[int]] = {name: set() for name in dataset_names}
    for path in samples:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise SSNetError(f"cannot read the samples log {path}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            try:
                picks = json.loads(line)["picks"]
                for source, index in picks:
                    drawn[dataset_names[source]].add(int(index))
            except (ValueError, KeyError, TypeError, IndexError):
                raise SSNetError(f"{path} line {n} is not a samples log line with picks of "
                                 f"the checkpoint's {len(dataset_names)} training datasets") \
                    from None
    return drawn


def soup_samples(training: dict[str, Any],
                 samples: Sequence[Path]) -> list[tuple[Path, list[str]]]:
    """Each samples log with the dataset names its picks index: the card's training datasets,
    or for a soup (``training.interpolation.ingredients``) those of the stage whose run folder
    holds the log; every stage of a soup must have its log given."""
    ingredients = (training.get("interpolation") or {}).get("ingredients")
    if not ingredients:
        names = [str(d["name"]) for d in training.get("datasets", [])]
        return [(path, names) for path in samples]
    folders = [Path(str(i["stage"])).parent.resolve() for i in ingredients]
    named = ", ".join(str(Path(str(i["stage"])).parent) for i in ingredients)
    pairs, covered = [], set()
    for path in samples:
        folder = path.parent.resolve()
        if folder not in folders:
            raise SSNetError(f"samples log {path} is in none of the soup's stage folders "
                             f"({named})")
        k = folders.index(folder)
        covered.add(k)
        pairs.append((path, [str(d["name"]) for d in ingredients[k]["training"]["datasets"]]))
    missing = [str(ingredients[k]["stage"]) for k in range(len(ingredients)) if k not in covered]
    if missing:
        raise SSNetError(f"the soup's stages {', '.join(missing)} have no samples log among "
                         f"--samples, so the frames they drew are unknown")
    return pairs


def drawn_by_frames(pairs: Sequence[tuple[Path, Sequence[str]]]) -> dict[str, set[int]]:
    """The frames the logs show drawn, keyed by whose frames they are (``idd_lite_loose``
    reads ``idd_lite``'s frames: a frame drawn under either is drawn)."""
    out: dict[str, set[int]] = {}
    for path, names in pairs:
        for name, frames in drawn_frames([path], names).items():
            out.setdefault(FRAMES_OF.get(name, name), set()).update(frames)
    return out


def unseen_frames(count: int, drawn: set[int], frames: int) -> list[int]:
    """At most ``frames`` indices of ``count`` that are not in ``drawn``, evenly spaced."""
    unseen = [i for i in range(count) if i not in drawn]
    step = max(1, len(unseen) // max(1, frames))
    return unseen[::step][:frames]


@torch.inference_mode()
def measure(segmenter: Segmenter, dataset: SegmentationDataset, indices: Sequence[int],
            offsets: Sequence[float], *, progress: bool = True) -> list[dict[str, Any]]:
    """Drivable precision/recall/IoU of ``indices`` of ``dataset`` for each logit offset."""
    truth_of = truth_lut(dataset, segmenter)
    lut = segmenter.drivable_lut
    drivable = list(segmenter.drivable_ids)
    total = np.zeros((len(offsets), 3), np.int64)
    for i in tqdm(indices, desc=f"{dataset.info.name}/{dataset.split}", unit="img",
                  disable=not progress, file=sys.stderr):
        image, labels_truth = dataset[i]
        truth = truth_of[labels_truth]
        logits, size = segmenter.logits(torch.from_numpy(image[None]))
        logits = logits.float()
        for j, offset in enumerate(offsets):
            shifted = logits.clone()
            shifted[:, drivable] += offset
            labels = resize_nearest(shifted.argmax(dim=1).to(torch.uint8), size)
            total[j] += counts(lut[labels[0].cpu().numpy()].astype(bool), truth)
    return [{"offset": off, **scores(total[j])} for j, off in enumerate(offsets)]


def choose(domains: dict[str, list[dict[str, Any]]], offsets: Sequence[float],
           min_precision: float) -> dict[str, Any]:
    """The offset with the best mean drivable IoU among those that keep every domain's
    drivable precision at ``min_precision`` or above (offset 0 when none does)."""
    means = [float(np.mean([d[j]["iou"] or 0.0 for d in domains.values()]))
             for j in range(len(offsets))]
    ok = [j for j in range(len(offsets))
          if all((d[j]["precision"] or 0.0) >= min_precision for d in domains.values())]
    zero = list(offsets).index(0.0)
    best = max(ok, key=lambda j: (round(means[j], 6), -abs(offsets[j]))) if ok else zero
    return {"offset": offsets[best], "mean_iou": means, "chosen_mean_iou": means[best],
            "uncalibrated_mean_iou": means[zero], "within_floor": [offsets[j] for j in ok]}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def markdown(report: dict[str, Any]) -> str:
    """calibration.md: one table of the offsets, the choice."""
    names = list(report["domains"])
    lines = [f"# Drivable logit offset: {report['weights']}", "",
             "Drivable precision / recall / IoU (%) on training frames the run never drew "
             f"({', '.join(f'{k}: {v} frames' for k, v in report['frames'].items())}).", "",
             "| offset | " + " | ".join(f"{n} P / R / IoU" for n in names) + " | mean IoU |",
             "|---:|" + "---|" * len(names) + "---:|"]
    for j, off in enumerate(report["offsets"]):
        cells = [" / ".join(_pct(report["domains"][n][j][k])
                            for k in ("precision", "recall", "iou")) for n in names]
        lines.append(f"| {off:+.2f} | " + " | ".join(cells)
                     + f" | {_pct(report['choice']['mean_iou'][j])} |")
    ch = report["choice"]
    lines += ["", f"Chosen: {ch['offset']:+.2f} (mean drivable IoU "
              f"{_pct(ch['uncalibrated_mean_iou'])} -> {_pct(ch['chosen_mean_iou'])}; "
              f"drivable precision at least {_pct(report['min_precision'])} in every domain).",
              ""]
    return "\n".join(lines)


def save_png(path: Path, report: dict[str, Any]) -> None:
    """Precision and recall against the offset, one line per domain, the choice marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, rows in report["domains"].items():
        xs = report["offsets"]
        for key, style in (("precision", "o-"), ("recall", "s--"), ("iou", "^:")):
            ax.plot(xs, [100 * (r[key] or 0.0) for r in rows], style,
                            label=f"{name} {key}")
    ax.axvline(report["choice"]["offset"], color="k", lw=0.8, label="chosen offset")
    ax.axhline(100 * report["min_precision"], color="grey", lw=0.6, ls="--",
               label="precision floor")
    ax.set_xlabel("logit offset on the drivable classes")
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("drivable mask vs logit offset (training frames never drawn)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_calibrated(weights: Path, out: Path, offset: float, record: dict[str, Any]) -> Path:
    """``weights`` with ``offset`` added to the drivable classes' classifier bias, its card's
    ``training.calibration`` set to ``record``."""
    model, card = load_checkpoint(weights)
    if "calibration" in card.training:
        raise SSNetError(f"{weights} is already calibrated (its card's training.calibration); "
                         f"calibrate the uncalibrated stage instead")
    params = dict(model.named_parameters())
    if CLASSIFIER_BIAS not in params:
        raise SSNetError(f"{weights}: its {card.model} model has no {CLASSIFIER_BIAS}")
    with torch.no_grad():
        params[CLASSIFIER_BIAS][list(card.drivable_ids)] += offset
    training = {**card.training, "calibration": record}
    return save_checkpoint(out, model, card.replace(training=training))


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-calibrate."""
    p = cli.parser("ssnet-calibrate", __doc__)
    cli.add(p, "--weights")
    p.add_argument("--samples", type=Path, nargs="+", required=True,
                   help="the run's samples_rank<R>.jsonl files (ssnet-train --log-samples)")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for calibrated.pt and the report")
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="folder holding one folder per dataset (the domains' default roots)")
    p.add_argument("--domain", action="append", default=None, metavar="NAME:SPLIT[:ROOT]",
                   help=f"a training split to measure on (repeat for several; default: "
                        f"{' '.join(DEFAULT_DOMAINS)})")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help="frames per domain, evenly spaced over those the run never drew")
    p.add_argument("--offsets", default=DEFAULT_OFFSETS,
                   help="logit offsets to measure, comma-separated")
    p.add_argument("--min-precision", type=float, default=DEFAULT_MIN_PRECISION,
                   help="drivable precision every domain must keep (0..1)")
    cli.add(p, "--device", "--precision", "--input-height", "--input-width", "--threads",
            "--overwrite", "--no-progress")
    return p


@cli.entry_point("ssnet-calibrate", interrupted="nothing written")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-calibrate."""
    args = build_parser().parse_args(argv)
    offsets = parse_offsets(args.offsets)
    size = cli.input_size(args)
    if args.frames < 1:
        raise cli.UsageError(f"--frames must be >= 1, got {args.frames}")
    if not 0.0 <= args.min_precision <= 1.0:
        raise cli.UsageError(f"--min-precision {args.min_precision} is outside 0..1")
    if args.out.exists() and not args.overwrite:
        raise SSNetError(f"output {args.out} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = Segmenter(args.weights, device=args.device, precision=args.precision,
                          input_size=size, drivable_rule=OFF)
    if "calibration" in segmenter.card.training:
        raise SSNetError(f"{args.weights} is already calibrated (its card's "
                         f"training.calibration); calibrate the uncalibrated stage instead")
    trained = segmenter.card.training.get("datasets", [])
    sources = [str(d["name"]) for d in trained]
    if not sources:
        raise SSNetError(f"{args.weights}: its card lists no training datasets, so the "
                         f"frames it never drew are unknown")
    drawn = drawn_by_frames(soup_samples(segmenter.card.training, args.samples))
    domains, frames = {}, {}
    for name, root, split in (parse_domain(d, args.data) for d in
                              args.domain or DEFAULT_DOMAINS):
        whose = FRAMES_OF.get(name, name)
        splits = segmenter.card.trained_split_names(name)
        if not splits:
            raise cli.UsageError(f"--domain {name}: {args.weights} was not trained on it "
                                 f"(its datasets: {', '.join(sources)})")
        if split not in splits:
            raise cli.UsageError(f"--domain {name}:{split}: the samples log numbers the frames "
                                 f"of the split {args.weights} trained on "
                                 f"({', '.join(sorted(splits))})")
        dataset = open_dataset(name, root, split)
        picked = unseen_frames(len(dataset), drawn.get(whose, set()), args.frames)
        key = f"{name}/{split}"
        domains[key] = measure(segmenter, dataset, picked, offsets,
                               progress=not args.no_progress)
        frames[key] = len(picked)
    choice = choose(domains, offsets, args.min_precision)
    report = {"weights": str(segmenter.weights), "offsets": offsets, "frames": frames,
              "min_precision": args.min_precision, "domains": domains, "choice": choice,
              "input_size": list(size) if size else "automatic"}
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"drivable_logit_offset": choice["offset"], "frames": frames,
              "min_precision": args.min_precision,
              "mean_drivable_iou": {"uncalibrated": round(100 * choice["uncalibrated_mean_iou"],
                                                          2),
                                    "calibrated": round(100 * choice["chosen_mean_iou"], 2)},
              "command": "ssnet-calibrate " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_calibrated(segmenter.weights, args.out / "calibrated.pt", choice["offset"], record)
    write_json(args.out / "calibration.json", report)
    write_text(args.out / "calibration.md", markdown(report))
    save_png(args.out / "calibration.png", report)
    print(markdown(report))
    print(f"wrote {args.out / 'calibrated.pt'} (drivable logit offset {choice['offset']:+g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
