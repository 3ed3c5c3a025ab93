"""Sweep a Road logit offset of a stage's checkpoint on frames of the training splits the stage
never drew (its --log-samples picks; never the hold-outs): drivable P/R/IoU per offset, per
domain. A research script for the next stage (docs/results/stages.md, stage 4), not a tool:

    .venv/bin/python scripts/road_bias.py runs/stage4/final.pt 30 0,0.5,1.0,1.5

reads runs/stage4/samples_rank0.jsonl and writes runs/road_bias_<checkpoint>.json."""
import json
import sys

import torch

from ssnet_ros import Segmenter
from ssnet_ros.datasets import open_dataset
from ssnet_ros.training.evaluate import evaluate

W, N = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60
OFFSETS = [float(v) for v in (sys.argv[3].split(",") if len(sys.argv) > 3 else
                              "0,0.25,0.5,0.75,1.0".split(","))]
seen = {(d, i) for line in open("runs/stage4/samples_rank0.jsonl")
        for d, i in json.loads(line)["picks"]}


class Subset:
    def __init__(self, base, indices):
        self.base, self.indices = base, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        return self.base[self.indices[j]]

    def __getattr__(self, name):
        return getattr(self.base, name)


sets = {}
for d, (name, root) in ((2, ("cityscapes_p2p", "../shared/data/cityscapes_p2p")),
                        (1, ("idd_lite", "../shared/data/idd_lite"))):
    base = open_dataset(name, root, "train")
    unseen = [i for i in range(len(base)) if (d, i) not in seen]
    step = max(1, len(unseen) // N)
    sets[name] = Subset(base, unseen[::step][:N])
    print(name, len(base), "unseen", len(unseen), "used", len(sets[name]), flush=True)
torch.set_num_threads(2)
seg = Segmenter(W, device="cpu")
bias = dict(seg.model.named_parameters())["classifier.bias"]
road = seg.class_names.index("Road")
base_value = float(bias.detach()[road])
rows = []
for off in OFFSETS:
    with torch.no_grad():
        bias[road] = base_value + off
    row = {"offset": off}
    for name, ds in sets.items():
        summary, _, _ = evaluate(seg, ds, progress=False)
        dr = summary["drivable"]
        row[name] = [round(100 * dr[k], 2) for k in ("precision", "recall", "iou")]
    row["mean_iou"] = round(sum(row[n][2] for n in sets) / len(sets), 2)
    rows.append(row)
    print(json.dumps(row), flush=True)
json.dump(rows, open(f"runs/road_bias_{W.replace('/', '_')}.json", "w"), indent=1)
