"""The one question packedbool asks about torch.compile: is this call being traced?

Eager and traced code differ in what they may do: eager code picks numpy / Triton kernels, pushes
modes and hooks, and guards on sizes; traced code must stay in aten ops that inductor can fuse and
must not specialise on sizes (dynamic shapes). Every such branch asks `tracing()`: the kernel choice
in `bittensor_core.kernels`, the size and constant helpers below; the layers' compile-only logic
lives in `layers.checkpointing`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["constant", "tracing"]


def tracing() -> bool:
    """Whether torch.compile (Dynamo / AOTAutograd) is tracing the current call."""
    return torch.compiler.is_compiling()


def padded_to(t: torch.Tensor, n: int) -> torch.Tensor:
    """`t` zero-padded along its last dim to `n` (>= its size): skipped in eager mode where nothing is
    missing; always an op while tracing, so a compiled graph does not guard on (specialise) the size."""
    return t if not tracing() and t.shape[-1] == n else F.pad(t, (0, n - t.shape[-1]))


def cut_to(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t[..., :n]``: skipped in eager mode where nothing is extra; always a slice while tracing (no
    size guard)."""
    return t if not tracing() and t.shape[-1] == n else t[..., :n]


def constant(value: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A 0-dim constant, built on ``aten.empty`` while tracing: see NOTE (CSE) in layers.checkpointing."""
    if tracing():
        return torch.empty((), dtype=dtype, device=device).fill_(value)
    return torch.full((), value, dtype=dtype, device=device)
