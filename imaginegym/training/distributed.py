"""torchrun / DDP: the same training command runs on one CPU, one GPU, or many processes.

Under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set) the process group starts with NCCL
on CUDA and gloo on the CPU; every rank draws its own batches (seed + rank) and only rank
0 writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def training_device(requested: str) -> torch.device:
    """"auto" picks this rank's GPU when there is one, else the CPU."""
    from imaginegym.world_model import resolve_device

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return resolve_device(requested)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()
