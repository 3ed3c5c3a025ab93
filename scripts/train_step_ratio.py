#!/usr/bin/env python3
"""Time one SSNet training step (forward, backward, AdamW) for each ``--train-head`` setting,
one after the other in one run, and print each one's time as a ratio of the whole network's.

    .venv/bin/python scripts/train_step_ratio.py [--heads all,4,2] [--batch-size 8] \\
        [--crop 192 256] [--steps 3] [--threads 2] [--weights ssnet_camvid] [--no-amp]

Random inputs and labels at the training crop, in the precision ssnet-train would use on this
CPU (bf16 autocast where it is fast, fp32 otherwise or with --no-amp). The first
step of each setting is a warm-up and not timed. Machines here are noisy: only the ratios
measured in one run are worth quoting.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ssnet_ros.core.checkpoint import load_checkpoint
from ssnet_ros.core.segmenter import resolve_weights
from ssnet_ros.training.head import freeze_all_but_head, train_mode
from ssnet_ros.training.train import bf16_is_fast


def step_seconds(weights: str, head: int | None, batch: int, crop: tuple[int, int],
                 steps: int, bf16: bool) -> float:
    """Mean seconds of ``steps`` timed training steps after one warm-up step."""
    model, card = load_checkpoint(resolve_weights(weights))
    model = model.float().to(memory_format=torch.channels_last)
    frozen = [] if head is None else freeze_all_but_head(model, head)
    train_mode(model, frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *crop, generator=generator).to(memory_format=torch.channels_last)
    y = torch.randint(0, len(card.class_names), (batch, *crop), generator=generator)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


def main() -> None:
    """Parse the options, time every setting and print a JSON line per setting."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="ssnet_camvid")
    p.add_argument("--heads", default="all,4,2",
                   help="comma-separated --train-head values; 'all' is the whole network")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step")
    p.add_argument("--crop", type=int, nargs=2, default=[192, 256], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-amp", action="store_true", help="fp32 even where bf16 is fast")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bf16 = not args.no_amp and bf16_is_fast(torch.device("cpu"))
    heads = [None if h == "all" else int(h) for h in args.heads.split(",")]
    seconds = {h: step_seconds(args.weights, h, args.batch_size, tuple(args.crop), args.steps,
                               bf16) for h in heads}
    reference = seconds.get(None, next(iter(seconds.values())))
    for head, s in seconds.items():
        print(json.dumps({"train_head": "all" if head is None else head,
                          "precision": "bf16 autocast" if bf16 else "fp32",
                          "seconds_per_step": round(s, 2),
                          "ratio_to_whole": round(s / reference, 2)}))


if __name__ == "__main__":
    main()
