"""``ssnet-ship``: make a final-fit checkpoint the shipped weights, its card saying how.

A final fit trains on every labelled image, its validation split included, so its own
validation figures mean nothing. The shipped card records instead (``metrics``):

- ``validation``: the figures of the *selection run* (same recipe, validation data held
  out) at its kept epoch, which is what the recipe is claimed to reach;
- ``final_fit``: the final fit's figures on data it never trained on (e.g. the IDD-Lite
  hold-out), taken from its own ``best.pt``;
- ``training``: the final fit's datasets and recipe (from its card), plus the selection run's;
- ``input_rule``: the package's current rule (:data:`ssnet_ros.core.input_size.DEFAULT_RULE`);
- ``data_licence``: the terms of the training datasets, which the weights inherit.

A final fit may continue an earlier shipped one (``ssnet-train --init`` of the shipped
weights, more steps of the same data): pass that shipped checkpoint as ``--selection``. Its
selection run stays the claim, and ``training["continues"]`` records the earlier stage.

``--eval`` / ``--selection-eval`` take ``metrics.json`` files of ``ssnet-eval`` runs (of the
final fit / of the selection run, at the shipped rule's input size); each replaces the figures
of its dataset and split.

A **stage** (``--stage NAME``) is a training run that starts from the shipped weights
(``ssnet-train --init``), possibly on new data. It ships only if it beats the weights it
started from (``--selection``) on the criterion declared before training
(:func:`stage_criterion`), both measured by ``ssnet-eval`` on the same fixed hold-outs
(``--eval`` for the stage, ``--baseline-eval`` for the shipped weights). The card's
``training["stages"]`` keeps the lineage: every stage's data, recipe, steps and hold-out
figures, oldest first. The KITTI road frames are part of the criterion through ``ssnet-sheet``
(``--sheet`` for the stage, ``--baseline-sheet`` for the shipped weights, the same frames):
there the shipped weights already find nearly all the road (recall 99 %) at a precision of
55 %, so drivable area a stage adds is false road: it must not mark more of the frames, nor
leave a hole in an ego lane the shipped weights fill (:func:`sheet_check`).

    ssnet-ship runs/final/final.pt --selection runs/select/best.pt \\
        --final-eval runs/final/best.pt --out ssnet_ros/weights/ssnet_camvid.pt --overwrite
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import options as cli
from ..core.checkpoint import load_checkpoint, read_card, save_checkpoint
from ..errors import SSNetError
from ..core.input_size import DEFAULT_RULE


FIELDS = ("images", "label_space", "miou", "pixel_accuracy", "mean_class_accuracy",
          "per_class_iou", "drivable")


def read_eval(path: Path) -> tuple[str, dict[str, Any]]:
    """(dataset/split, figures) of an ssnet-eval metrics.json."""
    try:
        data = json.loads(Path(path).read_text())
        key = f"{data['dataset']}/{data['split']}"
        figures = {k: data.get(k) for k in FIELDS}
        figures["input_size"] = data.get("input_size")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SSNetError(f"{path} is not an ssnet-eval metrics.json ({exc})") from None
    return key, figures


#: Hold-outs whose drivable IoU the stage criterion averages (never trained on by any stage).
CRITERION_HOLDOUTS = ("idd_lite/holdout", "cityscapes_p2p/holdout")
#: Floors of the stage criterion: drivable precision on every hold-out; CamVid val (a
#: regression check only: the final fits train on it) may lose at most this much mIoU, and no
#: class more than this much IoU.
MIN_PRECISION = 0.90
MAX_CAMVID_MIOU_LOSS = 0.02
MAX_CAMVID_CLASS_LOSS = 0.08
#: An ego lane with less of its box drivable than this has a hole (as ``ssnet-sheet`` says).
EGO_LANE_HOLE = 0.9


def read_sheet(path: Path) -> dict[str, dict[str, float]]:
    """image -> its ``drivable_share`` and ``ego_lane_drivable`` from an ``ssnet-sheet`` JSON."""
    try:
        frames = json.loads(Path(path).read_text())["frames"]
        return {str(f["image"]): {"drivable_share": float(f["drivable_share"]),
                                  "ego_lane_drivable": float(f["ego_lane_drivable"])}
                for f in frames}
    except OSError as exc:
        raise SSNetError(f"cannot read the sheet {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SSNetError(f"{path} is not an ssnet-sheet JSON ({exc})") from None


def sheet_check(stage: dict[str, dict[str, float]],
                baseline: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The KITTI part of the criterion, on the same frames: the stage's mean drivable share
    is not above the baseline's, and no frame gets an ego-lane hole the baseline does not
    have. Returns the figures and the failures."""
    if not stage or sorted(stage) != sorted(baseline):
        raise SSNetError("the stage's and the shipped weights' sheets are not of the same "
                         "frames; run ssnet-sheet on one folder for both")

    def mean_share(frames: dict[str, dict[str, float]]) -> float:
        return sum(f["drivable_share"] for f in frames.values()) / len(frames)

    new, old = mean_share(stage), mean_share(baseline)
    holes = sorted(k for k, f in stage.items() if f["ego_lane_drivable"] < EGO_LANE_HOLE
                   and baseline[k]["ego_lane_drivable"] >= EGO_LANE_HOLE)
    failures = []
    if new > old:
        failures.append(f"KITTI sheet: drivable share {100 * new:.1f} % above the shipped "
                        f"{100 * old:.1f} % (there, more drivable is more false road)")
    if holes:
        failures.append(f"KITTI sheet: new ego-lane holes in {', '.join(holes)}")
    return {"frames": len(stage), "drivable_share": new, "baseline_drivable_share": old,
            "new_ego_lane_holes": holes, "failures": failures}


def missing_figures(keys: Sequence[str]) -> SSNetError:
    """The one error for figures the stage criterion needs and was not given."""
    return SSNetError(f"the stage criterion needs ssnet-eval figures of "
                      f"{', '.join(sorted(set(keys)))} for both the stage and the baseline")


def stage_criterion(figures: dict[str, dict[str, Any]],
                    baseline: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The declared stage criterion of ``figures`` against ``baseline`` (dataset/split ->
    ssnet-eval figures): the score is the mean drivable IoU over :data:`CRITERION_HOLDOUTS`;
    a stage passes when its score is higher, every hold-out's drivable precision is at least
    :data:`MIN_PRECISION` (or no lower than the baseline's where that is already below), and
    CamVid val neither loses more than :data:`MAX_CAMVID_MIOU_LOSS` mIoU nor any class more
    than :data:`MAX_CAMVID_CLASS_LOSS` IoU.

    Without CamVid val figures the hold-out part is still judged (``camvid_judged`` False):
    a stage that already fails there is refused without the CamVid evaluation; one that
    passes there cannot pass without it (see :func:`ship_stage`)."""
    missing = [k for k in CRITERION_HOLDOUTS for figs in (figures, baseline) if k not in figs]
    if missing:
        raise missing_figures(missing)
    camvid = "camvid/val" in figures and "camvid/val" in baseline

    def score(figs: dict[str, dict[str, Any]]) -> float:
        return sum(figs[k]["drivable"]["iou"] for k in CRITERION_HOLDOUTS) / len(
            CRITERION_HOLDOUTS)

    failures = []
    for key in CRITERION_HOLDOUTS:
        new, old = figures[key]["drivable"]["precision"], baseline[key]["drivable"]["precision"]
        if new < min(MIN_PRECISION, old):
            failures.append(f"{key} drivable precision {100 * new:.1f} < "
                            f"{100 * min(MIN_PRECISION, old):.1f}")
    if camvid:
        new_cv, old_cv = figures["camvid/val"], baseline["camvid/val"]
        if new_cv["miou"] < old_cv["miou"] - MAX_CAMVID_MIOU_LOSS:
            failures.append(f"camvid/val mIoU {100 * new_cv['miou']:.1f} lost more than "
                            f"{100 * MAX_CAMVID_MIOU_LOSS:.0f} points "
                            f"(was {100 * old_cv['miou']:.1f})")
        for name, old in old_cv["per_class_iou"].items():
            new = new_cv["per_class_iou"].get(name)
            if new is not None and old is not None and new < old - MAX_CAMVID_CLASS_LOSS:
                failures.append(f"camvid/val {name} IoU {100 * new:.1f} collapsed (was "
                                f"{100 * old:.1f})")
    new_score, old_score = score(figures), score(baseline)
    if new_score <= old_score:
        failures.append(f"mean hold-out drivable IoU {100 * new_score:.2f} is not above the "
                        f"shipped {100 * old_score:.2f}")
    return {"score": new_score, "baseline_score": old_score, "holdouts": list(CRITERION_HOLDOUTS),
            "passed": camvid and not failures, "failures": failures, "camvid_judged": camvid}


def ship_stage(stage: Path, shipped: Path, out: Path, *, name: str, evals: Sequence[Path],
               baseline_evals: Sequence[Path], sheet: Path, baseline_sheet: Path,
               overwrite: bool = False) -> dict[str, Any]:
    """Ship ``stage`` (trained from ``shipped``) to ``out`` if it passes
    :func:`stage_criterion` and :func:`sheet_check`; its card keeps ``shipped``'s claims and
    appends the stage to ``training["stages"]``. Returns the criterion; raises SSNetError when
    it fails."""
    if out.exists() and not overwrite:
        raise SSNetError(f"output {out} exists; pass --overwrite to replace it")
    model, card = load_checkpoint(stage)
    previous = read_card(shipped)
    if previous.model != card.model or previous.class_names != card.class_names:
        raise SSNetError(f"stage {stage} is not the model of {shipped}")
    figures = dict(read_eval(p) for p in evals)
    baseline = dict(read_eval(p) for p in baseline_evals)
    verdict = stage_criterion(figures, baseline)
    verdict["kitti_sheet"] = sheet_check(read_sheet(sheet), read_sheet(baseline_sheet))
    verdict["failures"] += verdict["kitti_sheet"]["failures"]
    if not verdict["camvid_judged"] and not verdict["failures"]:
        raise missing_figures(["camvid/val"])
    verdict["passed"] = not verdict["failures"]
    if not verdict["passed"]:
        unjudged = ("" if verdict["camvid_judged"] else
                    " (CamVid val not judged: no ssnet-eval figures of camvid/val)")
        raise SSNetError(f"{name!r} is not shipped: " + "; ".join(verdict["failures"])
                         + unjudged)
    stages = list(previous.training.get("stages", []))
    if not stages:  # the first stage: the shipped weights' own recipe is stage 0
        stages.append({"name": "shipped before staged training", "training": {
            k: v for k, v in previous.training.items() if k != "stages"},
            "holdout": baseline})
    stages.append({"name": name, "training": {k: v for k, v in card.training.items()
                                              if k != "stages"},
                   "epoch": card.metrics.get("epoch"), "holdout": figures,
                   "criterion": verdict})
    metrics = {**previous.metrics, "stage": {"name": name, "holdout": figures,
                                             "criterion": verdict}}
    training = {**card.training, "stages": stages}
    save_checkpoint(out, model, card.replace(metrics=metrics, training=training,
                                             input_rule=dict(DEFAULT_RULE)))
    return verdict


def ship(final: Path, selection: Path, out: Path, *, final_eval: Path | None = None,
         evals: Sequence[Path] = (), selection_evals: Sequence[Path] = (),
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
    held_out.update(read_eval(p) for p in evals)
    chosen_figures = {**chosen.metrics["validation"], **dict(read_eval(p)
                                                            for p in selection_evals)}
    metrics = {
        "source": "validation: the selection run (validation data held out) at its kept "
                  "epoch; final_fit: these weights on data they never trained on",
        "selection_score": chosen.metrics.get("selection_score"),
        "epoch": chosen.metrics.get("epoch"),
        "validation": chosen_figures,
        "final_fit": {"epoch": card.metrics.get("epoch"), "validation": held_out},
    }
    if "selection_run" in chosen.training:  # a shipped card: this final fit continues it
        earlier = {k: v for k, v in chosen.training.items() if k != "selection_run"}
        training = {**card.training, "selection_run": chosen.training["selection_run"],
                    "continues": earlier}
        metrics["source"] += ("; the final fit continues an earlier shipped final fit "
                              "(training.continues): the selection run matches that first "
                              "stage only, the continuation has no selection run of its own")
    else:
        training = {**card.training, "selection_run": chosen.training}
    card = card.replace(metrics=metrics, training=training, input_rule=dict(DEFAULT_RULE))
    return save_checkpoint(out, model, card.replace(data_licence=card.licence()))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-ship."""
    p = cli.parser("ssnet-ship", __doc__.split("\n\n")[0])
    p.add_argument("final", type=Path, help="the final fit's checkpoint (final.pt)")
    p.add_argument("--selection", required=True, type=Path,
                   help="the selection run's best.pt (its validation figures are the claim)")
    p.add_argument("--final-eval", type=Path, default=None,
                   help="the final fit's best.pt, validated on data it never trained on")
    p.add_argument("--eval", nargs="*", type=Path, default=[],
                   help="ssnet-eval metrics.json files of the final fit on held-out data")
    p.add_argument("--selection-eval", nargs="*", type=Path, default=[],
                   help="ssnet-eval metrics.json files of the selection run")
    p.add_argument("--stage", default=None, metavar="NAME",
                   help="ship FINAL as a training stage started from --selection (the shipped "
                        "weights), only if it passes the stage criterion on --eval against "
                        "--baseline-eval")
    p.add_argument("--baseline-eval", nargs="*", type=Path, default=[],
                   help="ssnet-eval metrics.json files of --selection on the same hold-outs "
                        "(with --stage)")
    p.add_argument("--sheet", type=Path, default=None,
                   help="ssnet-sheet JSON of FINAL on the KITTI road frames (with --stage)")
    p.add_argument("--baseline-sheet", type=Path, default=None,
                   help="ssnet-sheet JSON of --selection on the same frames (with --stage)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write")
    cli.add(p, "--overwrite")
    args = p.parse_args(argv)
    try:
        if args.stage:
            if args.sheet is None or args.baseline_sheet is None:
                raise SSNetError("--stage needs --sheet and --baseline-sheet (ssnet-sheet on "
                                 "the KITTI road frames, for the stage and the shipped weights)")
            verdict = ship_stage(args.final, args.selection, args.out, name=args.stage,
                                 evals=args.eval, baseline_evals=args.baseline_eval,
                                 sheet=args.sheet, baseline_sheet=args.baseline_sheet,
                                 overwrite=args.overwrite)
            print(f"wrote {args.out}: {args.stage!r} mean hold-out drivable IoU "
                  f"{100 * verdict['score']:.2f} (shipped "
                  f"{100 * verdict['baseline_score']:.2f})")
        else:
            path = ship(args.final, args.selection, args.out, final_eval=args.final_eval,
                        evals=args.eval, selection_evals=args.selection_eval,
                        overwrite=args.overwrite)
            print(f"wrote {path}")
    except SSNetError as exc:
        print(f"ssnet-ship: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
