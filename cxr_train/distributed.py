"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DDP.

``cxr-train fit`` has no option for it. Started by ``torchrun --nproc-per-node N [--nnodes M ...]``
(which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), it joins
the process group (nccl on CUDA, gloo on CPU); started plainly it is a world of one process and
nothing changes.

The sampler: every process holds the batch-order generator in the same state, so all of them
draw the same global batches (the seeded permutation, or the class/source-weighted draw with
replacement) and each trains on its own contiguous share of every batch (:meth:`World.span`).
That is torch's ``DistributedSampler`` extended to weighted draws, which it does not support.
``--batch-size`` stays the global batch at any number of processes, so the learning rate, the
balance weights and the loss mean what they mean on one process, and the run follows the
one-process run with the same seed (up to BatchNorm, see :meth:`World.prepare`).
"""

from __future__ import annotations

import os
from datetime import timedelta
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (``size`` 1: a plain run, no process group)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the process's index on its node: its GPU, and who decodes first

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, logs, writes checkpoints, scores val and calibrates."""
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def span(self, n: int) -> slice:
        """This process's contiguous share of a global batch of ``n`` (shares differ by one at most)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def local_partner(self, partner: torch.Tensor, n: int) -> torch.Tensor:
        """Mixup partners inside this share: the global permutation's order restricted to it.

        A partner held by another process is out of reach, so with several processes images
        are mixed within their process's share (every process still draws the same numbers,
        so the batch-order generator stays in step); one process keeps the global permutation.
        """
        return partner if self.size == 1 else torch.argsort(partner[self.span(n)])

    def own_seed(self, seed: int, epoch: int) -> int:
        """Seed of this process's augmentation and dropout draws: ranks > 0 need their own, or all
        shares would get the same noise; ``last.pt`` holds rank 0's generators only, so a resumed
        run (at any number of processes) re-seeds the others from the epoch it resumes at."""
        return seed if self.rank == 0 else (seed * 1_000_003 + self.rank * 7_919 + epoch * 104_729) % 2**31

    def prepare(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm on CUDA, so BatchNorm normalises with the global batch's statistics as on
        one process. PyTorch has no CPU SyncBatchNorm: on gloo each process normalises with its
        own share's statistics, so BatchNorm models (SimpleCNN, ResNet-50) drift slightly from the
        one-process run there."""
        if self.size > 1 and self.device().type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as the training step calls it: DDP averages the gradients during backward."""
        if self.size == 1:
            return model
        device = self.device()
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def total(self, value: torch.Tensor) -> float:
        """The sum of ``value`` over all processes (a batch's loss from the shares' parts)."""
        if self.size == 1:
            return value.item()
        summed = value.detach().clone()
        dist.all_reduce(summed)
        return summed.item()

    def from_main(self, *values: float) -> list[float]:
        """Rank 0's values on every process (its early-stopping state: it alone scores val)."""
        if self.size == 1:
            return list(values)
        shared = torch.tensor(values, dtype=torch.float64, device=self.device())
        dist.broadcast(shared, src=0)
        return shared.tolist()

    def node_first(self, work: Callable[[], T]) -> T:
        """Run ``work`` on each node's first process, then on the others, which then find what it
        cached (decoded tensors) instead of decoding the same images again."""
        if self.local_rank == 0:
            result = work()
        self.barrier()
        if self.local_rank != 0:
            result = work()
        return result

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def start() -> World:
    """Join the process group ``torchrun`` set up, or return a world of one without it."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=collective_timeout())
    return world


def collective_timeout() -> timedelta:
    """How long a process waits in a collective for the others. Rank 0 works alone while they
    wait (decoding the data set first on each node, scoring val and writing checkpoints every
    epoch, calibrating at the end): on a large data set that outlasts torch's default (10-30
    min), so the default here is 6 hours, and ``CXR_DDP_TIMEOUT_MIN`` sets it."""
    return timedelta(minutes=float(os.environ.get("CXR_DDP_TIMEOUT_MIN", "360")))


@contextmanager
def joined() -> Iterator[World]:
    """This process's world for the length of a run; the process group is left at the end, by all
    processes at once (after an error, at once: torchrun stops the others)."""
    world = start()
    try:
        yield world
        world.barrier()  # leave together: gloo aborts a process whose peer left while its threads still ran
    finally:
        if world.size > 1:
            dist.destroy_process_group()
