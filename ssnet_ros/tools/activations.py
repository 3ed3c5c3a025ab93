"""The largest absolute activation of every layer on real frames: is fp16 (max 65504) safe?

    OMP_NUM_THREADS=1 python -m ssnet_ros.tools.activations \\
        --images ../shared/data/kitti_road_testing [--weights ssnet_camvid fcn8s_camvid] \\
        [--frames 12] [--out activations.json]

Runs each model in fp32 on the CPU through :meth:`Segmenter.logits`, so every frame reaches
the network at the size the Segmenter gives it (the card's automatic input rule), and records
with forward hooks the largest |value| each leaf module (convolution, ReLU, pooling, ...)
outputs over all frames. Prints one table per model and the headroom of the largest value to
fp16's 65504; ``--out`` writes the figures as JSON (docs/gpu.md, "fp16 range").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.fileio import write_json
from ..core.segmenter import Segmenter
from ..errors import SSNetError
from .export import read_images

FP16_MAX = 65504.0
"""The largest finite float16."""
LOGITS = "(logits)"
"""The name under which the model's output is recorded."""


def layer_maxima(segmenter: Segmenter, frames: Sequence[np.ndarray]
                 ) -> tuple[dict[str, float], list[tuple[int, int]]]:
    """{leaf module name: largest |output| over ``frames``} in forward order, then
    :data:`LOGITS` for the model's output, and the network input size of each frame."""
    maxima: dict[str, float] = {}
    handles = []

    def hook(name: str) -> Any:
        def record(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            outs = output if isinstance(output, (tuple, list)) else (output,)
            for out in outs:
                if isinstance(out, torch.Tensor) and out.is_floating_point():
                    value = float(out.detach().abs().amax())
                    maxima[name] = max(maxima.get(name, 0.0), value)
        return record

    for name, module in segmenter.model.named_modules():
        if not list(module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    sizes = []
    try:
        for rgb in frames:
            logits, _ = segmenter.logits(torch.from_numpy(np.ascontiguousarray(rgb))[None])
            sizes.append((int(logits.shape[-2]), int(logits.shape[-1])))
            # the model's output too: sums of skip connections (FCN-8s) are not modules
            maxima[LOGITS] = max(maxima.get(LOGITS, 0.0), float(logits.abs().amax()))
    finally:
        for handle in handles:
            handle.remove()
    return maxima, sizes


def measure(weights: str, frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """One model's per-layer maxima in fp32 on the CPU (automatic input size)."""
    segmenter = Segmenter(weights, device="cpu", precision="fp32", warmup=False)
    maxima, sizes = layer_maxima(segmenter, frames)
    if not maxima:
        raise SSNetError(f"{weights}: no layer output was seen")
    top = max(maxima, key=maxima.__getitem__)
    return {"weights": weights, "frames": len(frames), "network_sizes": sorted(set(sizes)),
            "layers": maxima, "max_layer": top, "max": maxima[top],
            "fp16_headroom": FP16_MAX / maxima[top] if maxima[top] else None}


def table(result: dict[str, Any]) -> str:
    """The figures of one model as a markdown table."""
    sizes = ", ".join(f"{h}x{w}" for h, w in result["network_sizes"])
    lines = [f"{result['weights']}: {result['frames']} frames at {sizes}; largest "
             f"{result['max']:.0f} in {result['max_layer']} "
             f"({result['fp16_headroom']:.1f}x below fp16's 65504)", "",
             "| layer | max abs |", "|---|---:|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in result["layers"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: 0 on success, 2 on bad input."""
    p = argparse.ArgumentParser(prog="python -m ssnet_ros.tools.activations",
                                description=__doc__.split("\n")[0])
    p.add_argument("--images", type=Path, required=True, help="folder of frames")
    p.add_argument("--weights", nargs="+", default=["ssnet_camvid", "fcn8s_camvid"])
    p.add_argument("--frames", type=int, default=12,
                   help="N frames evenly spread over the folder (name order)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = p.parse_args(argv)
    try:
        frames = read_images(args.images)
        picks = np.linspace(0, len(frames) - 1, min(len(frames), max(1, args.frames)))
        frames = [frames[i] for i in sorted({round(float(j)) for j in picks})]
        results = []
        for weights in args.weights:
            results.append(measure(weights, frames))
            print(table(results[-1]) + "\n", flush=True)
        if args.out is not None:
            write_json(args.out, {"images": str(args.images), "models": results})
    except (SSNetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
