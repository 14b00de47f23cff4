"""Data-parallel training under `torchrun`: one process per CPU slot or GPU.

    torchrun --nproc-per-node 2 -m tsessm.cli train ETTh1 --columns OT --out essm.tsm

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; `distributed_context` joins the process group
(gloo on CPU, nccl on CUDA) and pins each process to its GPU. The trainer shards every global
batch across the processes; rank 0 alone logs and saves.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


@contextlib.contextmanager
def distributed_context() -> Iterator[tuple[int, int, str | None]]:
    """Yields (rank, world_size, device or None); a no-op outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or torch.distributed.is_initialized():
        yield 0, 1, None
        return
    cuda = torch.cuda.is_available()
    device = None
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield torch.distributed.get_rank(), world, device
    finally:
        torch.distributed.destroy_process_group()
