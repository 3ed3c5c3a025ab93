#!/bin/bash
# The stage criterion's ssnet-eval figures for one set of weights (docs/results/stages.md):
#   scripts/eval_holdouts.sh WEIGHTS TAG [--no-camvid]
# writes runs/eval_TAG_<dataset>_<split>/metrics.json for the Cityscapes and IDD-Lite hold-outs
# (both at once, one thread each) and then CamVid val (a regression check: trained on), unless
# --no-camvid (ssnet-ship --stage judges the hold-outs and the sheet without it, and refuses a
# stage that fails them; it ships none without CamVid val).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: scripts/eval_holdouts.sh WEIGHTS TAG [--no-camvid]}
TAG=${2:?usage: scripts/eval_holdouts.sh WEIGHTS TAG [--no-camvid]}
CAMVID=yes
case "${3:-}" in
  "") ;;
  --no-camvid) CAMVID=no ;;
  *) echo "eval_holdouts.sh: unknown option ${3} (the one option is --no-camvid)" >&2; exit 2 ;;
esac
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
if [ "$CAMVID" = yes ]; then ev camvid val; fi
