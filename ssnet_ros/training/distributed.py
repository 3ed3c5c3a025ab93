"""Data-parallel training under ``torchrun``: the process group of :mod:`.train`.

``torchrun --nproc_per_node N $(which ssnet-train) ...`` starts N processes with the
environment variables RANK, WORLD_SIZE and LOCAL_RANK. :class:`Distributed` reads them, joins
the process group (NCCL when the rank trains on a CUDA device, gloo on the CPU), puts each rank
on the GPU of its local rank and wraps the model in DistributedDataParallel. Without those
variables it is a world of one process and every method is a no-op, so a plain ``ssnet-train``
runs exactly as before.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import SSNetError

# rank 0 validates alone while the others wait (Distributed.solo): allow a long validation
# pass; an error there reaches the other ranks at once, not after this timeout
TIMEOUT = _dt.timedelta(minutes=60)
T = TypeVar("T")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SSNetError(f"environment variable {name}={value!r} is not an integer") from None


def rank_device(choice: str, local_rank: int, world: int,
                visible: int | None = None) -> torch.device:
    """The training device of one rank from ``--device``: auto is CUDA when available, else
    the CPU. Under torchrun (``world`` > 1) any CUDA device (``cuda`` or ``cuda:N``) is the
    rank's own GPU: cuda:``local_rank`` where the rank sees several GPUs, cuda:0 where it sees
    exactly one (one GPU per rank through CUDA_VISIBLE_DEVICES, as SLURM sets it); an index
    would otherwise put every rank on that one GPU. ``visible``: the GPUs this process sees
    (default: torch.cuda.device_count())."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(choice)
    if device.type == "cuda" and world > 1:
        count = torch.cuda.device_count() if visible is None else visible
        if count == 1:
            return torch.device("cuda", 0)
        if local_rank >= count:
            raise SSNetError(f"local rank {local_rank} has no GPU of its own ({count} "
                             f"visible): start at most that many processes per node, or give "
                             f"each rank one GPU with CUDA_VISIBLE_DEVICES")
        device = torch.device("cuda", local_rank)
    return device


class _Failed:
    """What rank 0 broadcasts instead of a result when its solo work raised."""

    def __init__(self, message: str) -> None:
        self.message = message


class Distributed:
    """The process group of one training run (a no-op world of one without torchrun).

    Use as a context manager: entering joins the group, leaving waits for every rank and
    leaves it."""

    def __init__(self, device: str = "auto", env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.world = _env_int(env, "WORLD_SIZE", 1)
        self.rank = _env_int(env, "RANK", 0)
        self.local_rank = _env_int(env, "LOCAL_RANK", 0)
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise SSNetError(f"RANK {self.rank} is not within WORLD_SIZE {self.world}")
        self.device = rank_device(device, self.local_rank, self.world)
        self.backend = ("nccl" if self.device.type == "cuda" else "gloo") \
            if self.world > 1 else None
        self._joined = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one rank that writes files and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when there is more than one process."""
        return self.world > 1

    def __enter__(self) -> Distributed:
        if self.active and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(self.backend, rank=self.rank, world_size=self.world,
                                    timeout=TIMEOUT)
            self._joined = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._joined:
            if kind is None:
                dist.barrier()
            dist.destroy_process_group()
            self._joined = False

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel when there are several ranks (it broadcasts
        rank 0's weights and averages the gradients), else ``model`` itself."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def solo(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0 alone while the other ranks wait; its result on every rank.

        An error on rank 0 reaches every rank at once: rank 0 re-raises it, the others raise
        SSNetError naming it (instead of waiting in a barrier until the timeout)."""
        if not self.active:
            return work()
        if self.is_main:
            try:
                result = work()
            except BaseException as exc:
                self.broadcast(_Failed(f"{type(exc).__name__}: {exc}"))
                raise
            return self.broadcast(result)
        got = self.broadcast(None)
        if isinstance(got, _Failed):
            raise SSNetError(f"rank 0 failed while the other ranks waited: {got.message}")
        return got

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            dist.barrier()

    def _tensor(self, values: list[float]) -> torch.Tensor:
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        return torch.tensor(values, dtype=torch.float64, device=device)

    def mean(self, values: list[float]) -> list[float]:
        """The mean over the ranks of each of ``values``."""
        if not self.active:
            return list(values)
        t = self._tensor(values)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.active:
            return bool(flag)
        t = self._tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values
