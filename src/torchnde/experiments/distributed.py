"""Data parallelism with PyTorch's own stack: ``torchrun`` sets the environment, we follow it.

Under ``torchrun --nproc_per_node=N -m torchnde run NAME`` every process runs the same
experiment. :func:`setup` joins the process group (gloo on CPU, NCCL on CUDA, one GPU per
process by ``LOCAL_RANK``), :func:`shard` gives each process a fixed share of every global
batch, and the harness wraps the training step in ``DistributedDataParallel``. Without
``torchrun`` (no ``WORLD_SIZE`` in the environment, or 1) nothing of this is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "setup", "shard", "teardown"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes, and whether it joined a
    process group (and so must leave it)."""

    rank: int = 0
    world_size: int = 1
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0


def setup(device: str) -> tuple[DistInfo, str]:
    """Join the process group when launched by torchrun; return the info and the device to
    use (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    cuda = torch.device(device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        return DistInfo(rank, world, True), device
    return DistInfo(dist.get_rank(), dist.get_world_size(), False), device


def teardown(info: DistInfo) -> None:
    if info.initialised and dist.is_initialized():
        dist.destroy_process_group()


def shard(index: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This process's share of a global batch of indices: every ``world_size``-th one.

    The shares are disjoint and cover the batch, so the loss summed over all processes and
    divided by the global batch size is the single-process loss.
    """
    return index[info.rank :: info.world_size]


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``x`` over all processes (``x`` itself in a single process)."""
    if info.world_size > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()
