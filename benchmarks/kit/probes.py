"""Measurements of one training configuration: step time, peak memory, saved-for-backward bytes.

Example:
    >>> loss, seconds = timed_step(model, optimizer, batch)
    >>> mem = step_memory(model, optimizer, batch)        # after one step: optimizer state exists
    >>> mem.peak_bytes, mem.saved_bytes, mem.mask_bytes
    >>> dropout_saved_bytes(model, batch)                 # what dropout adds to the saved bytes
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from benchmarks.kit.memory import peak_memory, saved_bytes
from benchmarks.kit.training import train_step

__all__ = ["StepMemory", "dropout_saved_bytes", "step_memory", "synchronize", "timed_step"]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (timings on CUDA); nothing on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    device: torch.device | str = "cpu",
    on_grad: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """One training step (`train_step`); returns (loss, wall seconds)."""
    synchronize(device)
    start = time.perf_counter()
    loss = train_step(model, optimizer, batch, on_grad)
    synchronize(device)
    return loss, time.perf_counter() - start


@dataclass(frozen=True)
class StepMemory:
    """Memory of one training step.

    Attributes:
        peak_bytes: peak live bytes (params, grads, optimizer state, activations, temporaries).
        saved_bytes: bytes autograd saved for backward in the forward pass.
        packed_bytes: of which PackedBool masks.
        mask_bytes: stored masks (``SavedTensorCensus.mask_bytes``); 0 for a stock model, whose
            masks are plain float / bool tensors.
    """

    peak_bytes: int
    saved_bytes: int
    packed_bytes: int
    mask_bytes: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def step_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    device: torch.device | str = "cpu",
) -> StepMemory:
    """Peak memory and saved bytes of one full training step (it does update the model).

    Run one step before, so the optimizer state exists and the peak is the steady-state one.
    """

    def step() -> object:
        out, census = saved_bytes(lambda: model(**batch).loss)
        out.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return census

    census, peak = peak_memory(step, model, optimizer, *batch.values(), device=device)
    return StepMemory(peak, census.total_bytes, census.packed_bytes, census.mask_bytes)


def dropout_saved_bytes(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Saved bytes of a training-mode forward minus those of the same forward with dropout off.

    This is what dropout costs in saved activations: masks, plus any dropped copy kept for a
    later op (eager attention keeps the dropped probabilities for its value matmul).
    """
    was_training = model.training
    try:
        model.train()
        _, on = saved_bytes(lambda: model(**batch).loss)
        model.eval()  # in these models eval mode differs from train mode only in dropout
        _, off = saved_bytes(lambda: model(**batch).loss)
    finally:
        model.train(was_training)
    return on.total_bytes - off.total_bytes
