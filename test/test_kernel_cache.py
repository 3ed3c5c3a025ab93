"""The node bounds oneDNN's per-shape kernel caches: memory stays flat over many image sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
import numpy as np
import torch
from ssnet_ros import Segmenter
if sys.argv[1] == "bounded":
    from ssnet_ros.node import bound_cpu_kernel_cache
    bound_cpu_kernel_cache()
torch.set_num_threads(1)
seg = Segmenter(None, device="cpu", input_size="native")
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
seg(np.zeros((64, 64, 3), np.uint8), confidence=False)
start = rss()
for i in range(150):
    seg(np.zeros((64 + 8 * (i % 10), 64 + 8 * (i // 10), 3), np.uint8), confidence=False)
print(rss() - start)
"""


def growth_mb(mode: str) -> float:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         timeout=300, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_many_image_sizes_do_not_grow_the_node_without_bound() -> None:
    bounded, default = growth_mb("bounded"), growth_mb("default")
    assert bounded < 200, bounded
    assert bounded < 0.7 * default, (bounded, default)  # 250 sizes: 121 vs 396 MB
