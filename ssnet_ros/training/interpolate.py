"""ssnet-interpolate: a stage's weights moved part of the way back to the weights it started
from, the shipped ones (weight-space interpolation, as in WiSE-FT).

    ssnet-interpolate runs/stage5/final.pt --weights ssnet_camvid --alpha 0.5 \\
        --out runs/stage5_half.pt

A stage fine-tuned from the shipped weights on a new mix learns the new boundary (Cityscapes'
Road/Pavement) and forgets part of what the shipped weights knew (IDD-Lite's road). The two
sets of weights lie in one basin, so every weight ``(1 - alpha) * shipped + alpha * stage``
is a working model between them, and on data neither was fitted to (other cameras and cities)
the mixture is often better than either. ``alpha`` 1 is the stage, 0 the shipped weights.
Floating-point tensors (weights, biases, batch-norm running statistics) are mixed; integer
buffers (batch-norm step counts) are the stage's. The card is the stage's, with
``training.interpolation`` recording the two files and ``alpha``, so ``ssnet-ship --stage``
keeps it in the lineage. Interpolate before ``ssnet-calibrate``, never a calibrated stage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core import options as cli
from ..core.checkpoint import load_checkpoint, save_checkpoint
from ..core.segmenter import resolve_weights
from ..errors import SSNetError


def interpolate(base: Path, stage: Path, out: Path, alpha: float, *, base_name: str = "",
                command: str = "") -> dict[str, Any]:
    """Write ``(1 - alpha) * base + alpha * stage`` to ``out`` with the stage's card plus
    ``training.interpolation`` (``base_name``: how to name ``base`` there); returns it."""
    if not 0.0 <= alpha <= 1.0:
        raise SSNetError(f"--alpha {alpha} is outside 0..1")
    stage_model, card = load_checkpoint(stage)
    base_model, base_card = load_checkpoint(base)
    if (base_card.model, base_card.class_names, base_card.model_kwargs) != \
            (card.model, card.class_names, card.model_kwargs):
        raise SSNetError(f"{stage} ({card.model}, {len(card.class_names)} classes) and {base} "
                         f"({base_card.model}, {len(base_card.class_names)} classes) are not "
                         f"the same network")
    for done, what in (("interpolation", "interpolated"), ("calibration", "calibrated")):
        if done in card.training:
            raise SSNetError(f"{stage} is already {what} (its card's training.{done}); "
                             f"interpolate the stage as it was trained")
    base_state = base_model.state_dict()
    mixed = {}
    for key, value in stage_model.state_dict().items():
        mixed[key] = (torch.lerp(base_state[key], value, alpha)
                      if value.is_floating_point() else value)
    stage_model.load_state_dict(mixed)
    record = {"base": base_name or str(base), "stage": str(stage), "alpha": alpha,
              "rule": "(1 - alpha) * base + alpha * stage, floating-point tensors; integer "
                      "buffers from the stage"}
    if command:
        record["command"] = command
    training = {**card.training, "interpolation": record}
    save_checkpoint(out, stage_model, card.replace(training=training))
    return record


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-interpolate."""
    p = cli.parser("ssnet-interpolate", __doc__)
    p.add_argument("stage", type=Path, help="the stage's checkpoint (final.pt)")
    cli.add(p, "--weights")
    p.add_argument("--alpha", type=float, required=True,
                   help="the stage's share: 1 is the stage, 0 the --weights it started from")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    cli.add(p, "--overwrite")
    return p


@cli.entry_point("ssnet-interpolate", interrupted="nothing written")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-interpolate."""
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.overwrite:
        raise SSNetError(f"output {args.out} exists; pass --overwrite to replace it")
    base = resolve_weights(args.weights)
    command = "ssnet-interpolate " + " ".join(sys.argv[1:] if argv is None else argv)
    interpolate(base, args.stage, args.out, args.alpha, base_name=str(args.weights),
                command=command)
    print(f"wrote {args.out}: {1 - args.alpha:g} x {base} + {args.alpha:g} x {args.stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
