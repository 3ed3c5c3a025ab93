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

Given several stages (each fine-tuned from the same ``--weights`` on its own mix), the stage is
their mean (a model soup): ``(1 - alpha) * shipped + alpha * mean(stages)``. The soup's card
lists every stage's training record (``training.interpolation.ingredients``) and the union of
their datasets, so ``ssnet-calibrate`` can leave out every frame any of them drew.

    ssnet-interpolate runs/stage{4,5,6,7}/final.pt --weights ssnet_camvid --alpha 1 \\
        --out runs/stage8_soup.pt
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core import options as cli
from ..core.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from ..core.segmenter import resolve_weights
from ..errors import SSNetError


def interpolate(base: Path, stages: Path | Sequence[Path], out: Path, alpha: float, *,
                base_name: str = "", command: str = "") -> dict[str, Any]:
    """Write ``(1 - alpha) * base + alpha * mean(stages)`` to ``out`` with the (first) stage's
    card plus ``training.interpolation`` (``base_name``: how to name ``base`` there); returns
    the record. Several stages make a soup: its card's training is the union of their datasets
    and every stage's own training record."""
    if not 0.0 <= alpha <= 1.0:
        raise SSNetError(f"--alpha {alpha} is outside 0..1")
    paths = [stages] if isinstance(stages, Path) else list(stages)
    if not paths:
        raise SSNetError("no stage to interpolate")
    if len(set(map(str, paths))) != len(paths):
        raise SSNetError(f"a stage is given twice: {' '.join(map(str, paths))}")
    base_model, base_card = load_checkpoint(base)
    models, cards = [], []
    for path in paths:
        model, card = load_checkpoint(path)
        if (base_card.model, base_card.class_names, base_card.model_kwargs) != \
                (card.model, card.class_names, card.model_kwargs):
            raise SSNetError(f"{path} ({card.model}, {len(card.class_names)} classes) and {base} "
                             f"({base_card.model}, {len(base_card.class_names)} classes) are "
                             f"not the same network")
        for done, what in (("interpolation", "interpolated"), ("calibration", "calibrated")):
            if done in card.training:
                raise SSNetError(f"{path} is already {what} (its card's training.{done}); "
                                 f"interpolate the stage as it was trained")
        models.append(model)
        cards.append(card)
    base_state = base_model.state_dict()
    states = [m.state_dict() for m in models]
    mixed = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            mean = value if len(states) == 1 else \
                torch.stack([state[key].double() for state in states]).mean(0).to(value.dtype)
            mixed[key] = torch.lerp(base_state[key], mean, alpha)
        else:
            mixed[key] = value
    models[0].load_state_dict(mixed)
    record: dict[str, Any] = {"base": base_name or str(base), "alpha": alpha}
    card = cards[0]
    if len(paths) == 1:
        record["stage"] = str(paths[0])
        record["rule"] = ("(1 - alpha) * base + alpha * stage, floating-point tensors; integer "
                          "buffers from the stage")
        training = {**cards[0].training, "interpolation": record}
    else:
        record["stages"] = [str(p) for p in paths]
        record["rule"] = ("(1 - alpha) * base + alpha * mean(stages), floating-point tensors; "
                          "integer buffers from the first stage")
        record["ingredients"] = [{"stage": str(p), "training": c.training}
                                 for p, c in zip(paths, cards)]
        inits = {str(c.training.get("init", "")) for c in cards}
        if len(inits) != 1:
            raise SSNetError(f"the stages did not all start from the same weights (their "
                             f"cards' training.init: {', '.join(sorted(inits))}); a soup mixes "
                             f"stages fine-tuned from one set of weights")
        training = {"datasets": union_of_datasets(cards), "init": inits.pop(),
                    "interpolation": record}
        # the first stage's last epoch is not the soup's
        card = card.replace(metrics={"note": f"the mean of {len(paths)} stages: no validation "
                                             f"of its own (ssnet-eval it)"})
    if command:
        record["command"] = command
    save_checkpoint(out, models[0], card.replace(training=training))
    return record


def union_of_datasets(cards: Sequence[ModelCard]) -> list[dict[str, Any]]:
    """The training datasets of several cards, each (name, split) once, in first-seen order
    (a soup has no single mix: ``mix`` is left out)."""
    union: dict[tuple[str, str], dict[str, Any]] = {}
    for card in cards:
        for entry in card.training.get("datasets") or ():
            key = (str(entry.get("name")), str(entry.get("split")))
            union.setdefault(key, {k: v for k, v in entry.items() if k != "mix"})
    return list(union.values())


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-interpolate."""
    p = cli.parser("ssnet-interpolate", __doc__)
    p.add_argument("stage", type=Path, nargs="+",
                   help="the stage's checkpoint (final.pt); several: their mean (a soup)")
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
    stages = " ".join(map(str, args.stage))
    what = stages if len(args.stage) == 1 else f"the mean of {stages}"
    print(f"wrote {args.out}: {1 - args.alpha:g} x {base} + {args.alpha:g} x {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
