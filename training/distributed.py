"""Process-group setup for every way the trainer is started.

* plain ``python``/``diffmf_train``: one process, no process group;
* ``torchrun --nproc_per_node=N`` (one or many nodes): RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* come from
  the environment (``env://``);
* the seed's ``python -m torch.distributed.launch ... --dist True``: the same environment, plus a
  ``--local-rank`` argument that the CLI accepts and that must agree with LOCAL_RANK.

The launcher's environment decides: WORLD_SIZE > 1 means distributed, whatever ``dist`` says (a
``dist: true`` run started without a launcher trains in one process, with a warning). NCCL on CUDA,
gloo on CPU; each process drives the GPU of its local rank.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger("diffmf_training")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def pick_device(requested: str | None, local_rank: int) -> torch.device:
    if requested in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def setup(dist_requested: bool = False, local_rank_arg: int | None = None,
          device: str | None = None) -> DistContext:
    """Join the process group the launcher describes (or none); returns this process's place in it."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", local_rank_arg if local_rank_arg is not None else 0)
    if local_rank_arg is not None and local_rank_arg != local_rank:
        raise ValueError(f"--local-rank {local_rank_arg} disagrees with LOCAL_RANK={local_rank}")
    dev = pick_device(device, local_rank)
    if world <= 1:
        if dist_requested:
            log.warning("dist is true but no launcher started this process (WORLD_SIZE unset): training in "
                        "one process; use torchrun --nproc_per_node=N for several")
        return DistContext(0, 1, 0, dev, None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, dev, backend)


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (so all stop at the same iteration)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def min_max_over_ranks(ctx: DistContext, value: int) -> tuple[int, int]:
    """(smallest, largest) of an integer across the processes (to check that they agree)."""
    if not ctx.distributed:
        return value, value
    t = torch.tensor([-value, value], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return -int(t[0].item()), int(t[1].item())


def mean_over_ranks(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values
