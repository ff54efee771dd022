"""Two gloo CPU ranks and their single-process reference, shared by the DDP / FSDP tests.

Each rank seeds torch's generator with ``SEED + rank`` and runs its half of a ``BATCH`` batch
(`half`); `single_process_grads` runs both halves in one process from the same seeds, on one
thread as the workers, and averages them as DDP's all-reduce does: the gradients a rank must get.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .tiny_models import loss_and_grads

WORLD, SEED, BATCH = 2, 100, 4

# A rank that dies or stalls makes its peer fail within this, not wait for gloo's 30-minute default.
GLOO_TIMEOUT = timedelta(minutes=3)


def half(inputs: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Rank `rank`'s share of the batch."""
    size = BATCH // WORLD
    return {k: v[rank * size : (rank + 1) * size] for k, v in inputs.items()}


def single_process_grads(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The gradients DDP must give: each rank's half with its seed, averaged, on one thread (as the workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        halves = [loss_and_grads(model, half(inputs, r), seed=SEED + r)[1] for r in range(WORLD)]
    finally:
        torch.set_num_threads(threads)
    return {n: (halves[0][n] + halves[1][n]) / WORLD for n in halves[0]}


def exit_worker() -> None:
    """Leave a spawned worker without interpreter teardown. Tearing down a gloo process group that
    DDP's Reducer still references can deadlock (seen: ~ProcessGroupGloo joins a gloo thread that
    waits for the GIL the destructor holds); the barrier keeps a peer from leaving mid-collective."""
    dist.barrier()
    os._exit(0)
