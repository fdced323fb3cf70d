"""Process-group set-up for ``torchrun`` (DDP); a single process needs none of it.

``torchrun --nproc-per-node N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the backend is
``nccl`` when the process owns a GPU, ``gloo`` otherwise (CPU, tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vlpart.core.errors import InputError, RunError

__all__ = ["DistInfo", "init_distributed", "one_torch_thread", "shutdown_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Args:
        device: ``"auto"`` (the local GPU if CUDA is available, else CPU), ``"cpu"`` or ``"cuda"``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; expected auto, cpu or cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RunError("device 'cuda' was asked for but CUDA is not available")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world_size, device=dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def one_torch_thread(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker process (on a few cores, more
    threads per worker only compete with the main process)."""
    torch.set_num_threads(1)
