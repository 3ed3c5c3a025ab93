"""``ssnet-ship``: make a final-fit checkpoint the weights to ship, its card saying how it was made.

A final fit trains on every labelled image, its validation split included, so its own
validation figures mean nothing. The shipped card records instead (``metrics``):

- ``validation``: the figures of the *selection run* (same recipe, validation data held
  out) at its kept epoch, which is what the recipe is claimed to reach;
- ``final_fit``: the final fit's figures on data it never trained on (e.g. the IDD-Lite
  hold-out), taken from its own ``best.pt``;
- ``training``: the final fit's datasets and recipe (from its card), plus the selection run's.

    ssnet-ship runs/final/final.pt --selection runs/select/best.pt \\
        --final-eval runs/final/best.pt --out ssnet_ros/weights/ssnet_camvid.pt --overwrite
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import load_checkpoint, read_card, save_checkpoint
from .errors import SSNetError


def ship(final: Path, selection: Path, out: Path, *, final_eval: Path | None = None,
         overwrite: bool = False) -> Path:
    """Write ``final``'s weights to ``out`` with the card described in the module doc."""
    if out.exists() and not overwrite:
        raise SSNetError(f"output {out} exists; pass --overwrite to replace it")
    model, card = load_checkpoint(final)
    chosen = read_card(selection)
    if chosen.model != card.model or chosen.class_names != card.class_names:
        raise SSNetError(f"selection run {selection} ({chosen.model}, "
                         f"{len(chosen.class_names)} classes) is not the model of {final}")
    if "validation" not in chosen.metrics:
        raise SSNetError(f"selection run {selection} has no validation figures in its card")
    held_out = {}
    if final_eval is not None:
        evaluated = read_card(final_eval).metrics
        if evaluated.get("epoch") != card.metrics.get("epoch"):
            raise SSNetError(f"{final_eval} was validated at epoch {evaluated.get('epoch')}, "
                             f"but {final} is epoch {card.metrics.get('epoch')}")
        held_out = dict(evaluated.get("validation", {}))
    metrics = {
        "source": "validation: the selection run (validation data held out) at its kept "
                  "epoch; final_fit: these weights on data they never trained on",
        "selection_score": chosen.metrics.get("selection_score"),
        "epoch": chosen.metrics.get("epoch"),
        "validation": chosen.metrics["validation"],
        "final_fit": {"epoch": card.metrics.get("epoch"), "validation": held_out},
    }
    training = {**card.training, "selection_run": chosen.training}
    return save_checkpoint(out, model, card.replace(metrics=metrics, training=training))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-ship."""
    p = argparse.ArgumentParser(prog="ssnet-ship", description=__doc__.split("\n\n")[0])
    p.add_argument("final", type=Path, help="the final fit's checkpoint (final.pt)")
    p.add_argument("--selection", required=True, type=Path,
                   help="the selection run's best.pt (its validation figures are the claim)")
    p.add_argument("--final-eval", type=Path, default=None,
                   help="the final fit's best.pt, validated on data it never trained on")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    try:
        path = ship(args.final, args.selection, args.out, final_eval=args.final_eval,
                    overwrite=args.overwrite)
    except SSNetError as exc:
        print(f"ssnet-ship: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
