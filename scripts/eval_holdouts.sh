#!/bin/bash
# The stage criterion's ssnet-eval figures for one set of weights (docs/results/stages.md):
#   scripts/eval_holdouts.sh WEIGHTS TAG
# writes runs/eval_TAG_<dataset>_<split>/metrics.json for the Cityscapes and IDD-Lite hold-outs
# (both at once, one thread each) and then CamVid val (a regression check: trained on).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: scripts/eval_holdouts.sh WEIGHTS TAG}
TAG=${2:?usage: scripts/eval_holdouts.sh WEIGHTS TAG}
DATA=${SSNET_DATA:-../shared/data}
export OMP_NUM_THREADS=1
ev() {
  .venv/bin/ssnet-eval --weights "$W" --dataset "$1" --root "$DATA/$1" --split "$2" \
    --out "runs/eval_${TAG}_$1_$2" --overwrite --no-progress > "runs/eval_${TAG}_$1_$2.log" 2>&1
}
mkdir -p runs
ev cityscapes_p2p holdout & cs=$!
ev idd_lite holdout & idd=$!
wait $cs
wait $idd
ev camvid val
