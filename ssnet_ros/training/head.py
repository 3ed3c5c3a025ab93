"""Fine-tuning only the head of an SSNet: the classifier and its last decoder stages.

A stage that retrains the whole network on a new domain forgets some of the old ones (the
staged training of ``docs/results/stages.md``: IDD-Lite recall and CamVid's Fence fell).
Freezing the encoder and the deeper decoder stages keeps the features the shipped weights
learned and retrains only the decision on top of them, at a fraction of a step's cost: the
frozen part runs forward only, and its batch-norm statistics stay as they were.
"""

from __future__ import annotations

from torch import nn

from ..errors import SSNetError


def freeze_all_but_head(model: nn.Module, stages: int) -> list[nn.Module]:
    """Freeze ``model`` except its classifier and its last ``stages`` decoder stages.

    Returns the frozen modules: call ``.eval()`` on them after every ``model.train()`` so
    their batch-norm statistics do not move. ``stages`` runs from 0 (the classifier alone) to
    the number of decoder stages (the whole decoder, the encoder frozen)."""
    decoder = getattr(model, "decoder", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(decoder, nn.ModuleList) or not isinstance(classifier, nn.Module) \
            or not hasattr(model, "encoder"):
        raise SSNetError(f"--train-head needs an SSNet (encoder, decoder stages, classifier), "
                         f"not a {type(model).__name__}")
    if not 0 <= stages <= len(decoder):
        raise SSNetError(f"--train-head {stages}: an SSNet has {len(decoder)} decoder stages; "
                         f"give 0 (the classifier alone) to {len(decoder)} (the encoder frozen)")
    head = [classifier, *list(decoder)[len(decoder) - stages:]]
    head_ids = {id(p) for m in head for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_ids)
    frozen = [model.encoder, *list(decoder)[:len(decoder) - stages]]
    return frozen


def train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """``model.train()`` with the ``frozen`` modules kept in eval mode."""
    model.train()
    for module in frozen:
        module.eval()
