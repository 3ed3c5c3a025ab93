"""``torchrun`` data-parallel training: two CPU processes (gloo) train, only rank 0 writes, the
ranks draw different samples, the loss falls, --resume continues; one process is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssnet_ros import Segmenter, read_card
from ssnet_ros.errors import SSNetError
from ssnet_ros.training.distributed import Distributed, rank_device

from conftest import CAMVID_ROOT, write_camvid_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real CamVid when ../shared/data is present, else a written CamVid-layout fixture."""
    if (CAMVID_ROOT / "train").is_dir():
        return CAMVID_ROOT
    return write_camvid_fixture(tmp_path_factory.mktemp("camvid"), size=(360, 480))


def torchrun(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node 2 ssnet-train ARGS`` (the module form of
    both), one thread per rank; fails the test with its output on a non-zero status."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "ssnet_ros.training.train", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=200, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_picks(path: Path) -> dict[int, list[list[int]]]:
    """step -> the (dataset, image) picks of one rank's samples log."""
    return {row["step"]: row["picks"] for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_gloo_processes_train_resume_and_rank_0_alone_writes(data_root: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--dataset", "camvid", "--root", str(data_root), "--out", str(out),
              "--limit", "2", "--batch-size", "1", "--crop", "64", "96", "--scale", "0.35",
              "0.35", "--steps-per-epoch", "4", "--epochs", "3", "--lr", "2e-3",
              "--warmup-steps", "2", "--class-weights", "none", "--val-limit", "1",
              "--val-every", "100", "--no-progress", "--threads", "1", "--no-amp",
              "--log-samples", "--seed", "1"]
    started = time.monotonic()
    # the time budget stops both ranks after epoch 1 (checkpointed); no validation yet
    first = torchrun(common + ["--val-split", "none", "--time-budget-min", "0.001"])
    assert json.loads((out / "history.json").read_text())[0]["epoch"] == 1
    assert first.stdout.count('"best_selection_score"') == 1  # rank 0 alone reports
    # continue under torchrun; rank 0 validates (on a training frame) while rank 1 waits
    second = torchrun(common + ["--val-split", "train", "--resume"])
    seconds = time.monotonic() - started
    assert second.stderr.count("resumed from") == 1 and "after epoch 1" in second.stderr
    assert second.stderr.count("epoch 3: loss") == 1, second.stderr[-2000:]

    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    losses = [h["train_loss"] for h in history]  # the mean over both ranks
    # measured in three runs: 2.27-2.41 -> 1.66-1.86 (two frames, 12 steps of 2 crops)
    assert losses[-1] < 0.9 * losses[0], losses

    # each rank trained on its own share of every step's global batch: different frames
    picks = [read_picks(out / f"samples_rank{r}.jsonl") for r in (0, 1)]
    assert sorted(picks[0]) == sorted(picks[1]) == list(range(12))  # resumed at step 4
    for step in range(12):
        assert len(picks[0][step]) == len(picks[1][step]) == 1
        assert picks[0][step] != picks[1][step], step

    # rank 0 alone wrote the run folder: one of each file, no leftovers of atomic writes
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "best_val", "config.json", "curves.png", "final.pt", "history.json",
        "last.pt", "samples_rank0.jsonl", "samples_rank1.jsonl"]
    assert (out / "curves.png").stat().st_size > 1000
    card = read_card(out / "best.pt")
    assert card.training["processes"] == 2 and card.training["global_batch_size"] == 2
    assert card.metrics["epoch"] == 3
    assert not any(k.startswith("module.")
                   for k in torch.load(out / "last.pt", weights_only=True)["model"])
    seg = Segmenter(out / "best.pt", device="cpu", input_size=(64, 96))
    result = seg(np.zeros((90, 120, 3), np.uint8))
    assert result.labels.shape == (90, 120)
    assert read_card(out / "final.pt").metrics["epoch"] == 3
    print(f"two gloo processes, 12 steps in two runs: {seconds:.0f} s, loss "
          f"{losses[0]:.2f} -> {losses[-1]:.2f}")


def test_without_torchrun_it_is_a_world_of_one() -> None:
    world = Distributed("cpu", env={})
    with world:
        assert (world.rank, world.world, world.is_main, world.active) == (0, 1, True, False)
        assert world.backend is None
        model = torch.nn.Linear(2, 2)
        assert world.wrap(model) is model
        assert world.mean([1.5, 2.0]) == [1.5, 2.0]
        assert world.any(False) is False and world.any(True) is True
        assert world.broadcast({"a": 1}) == {"a": 1} and world.gather(3) == [3]
        world.barrier()
    assert rank_device("cpu", 1, 2) == torch.device("cpu")
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    world = Distributed("cpu", env=env)
    assert (world.rank, world.world, world.is_main, world.backend) == (1, 2, False, "gloo")
    with pytest.raises(SSNetError, match="RANK 2 is not within WORLD_SIZE 2"):
        Distributed("cpu", env={"RANK": "2", "WORLD_SIZE": "2"})


def test_every_rank_gets_its_own_gpu_under_torchrun() -> None:
    cuda = torch.device
    # several GPUs visible: the local rank's, whatever index --device named
    assert rank_device("cuda", 1, 2, visible=2) == cuda("cuda", 1)
    assert rank_device("cuda:0", 1, 2, visible=2) == cuda("cuda", 1)
    # one GPU per rank (CUDA_VISIBLE_DEVICES per rank): cuda:0 on every local rank
    assert rank_device("cuda", 1, 2, visible=1) == cuda("cuda", 0)
    assert rank_device("cuda:1", 3, 4, visible=1) == cuda("cuda", 0)
    # one process: as given
    assert rank_device("cuda:1", 0, 1, visible=2) == cuda("cuda", 1)
    with pytest.raises(SSNetError, match="local rank 2 has no GPU of its own"):
        rank_device("cuda", 2, 4, visible=2)


def test_bf16_autocast_only_where_it_is_native() -> None:
    from ssnet_ros.training.train import bf16_is_fast

    gpu = torch.device("cuda", 0)
    assert not bf16_is_fast(gpu, (7, 5)) and not bf16_is_fast(gpu, (6, 1))
    assert bf16_is_fast(gpu, (8, 0)) and bf16_is_fast(gpu, (9, 0))


SOLO_RANK = """
import sys, time
from ssnet_ros.errors import SSNetError
from ssnet_ros.training.distributed import Distributed

def validate():
    if sys.argv[1] == "fail":
        raise RuntimeError("CUDA out of memory in the fp16 copy")
    return {"miou": 0.5}

started = time.monotonic()
try:
    with Distributed("cpu") as world:
        got = world.solo(validate)
        print("result", got, flush=True)
except SSNetError as exc:
    print("ssnet error:", exc, flush=True)
    sys.exit(3)
except RuntimeError as exc:
    print("own error:", exc, flush=True)
    sys.exit(4)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["fail", "ok"])
def test_an_error_in_rank_0_solo_work_reaches_the_other_rank_at_once(mode: str) -> None:
    """Two gloo processes: rank 0's validation fails; rank 1 stops with that error within
    seconds instead of waiting in a barrier for the 60-minute timeout."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, "-c", SOLO_RANK, mode], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=90)[0] for p in procs]
    codes = [p.returncode for p in procs]
    if mode == "ok":
        assert codes == [0, 0], outs
        assert all("result {'miou': 0.5}" in out for out in outs), outs
    else:
        assert codes == [4, 3], outs
        assert "rank 0 failed while the other ranks waited: RuntimeError: CUDA out of " \
               "memory in the fp16 copy" in outs[1], outs
