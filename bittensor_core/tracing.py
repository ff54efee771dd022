"""The one question packedbool asks about torch.compile: is this call being traced?

Eager and traced code differ in what they may do: eager code picks numpy / Triton kernels, pushes
modes and hooks, and guards on sizes; traced code must stay in aten ops that inductor can fuse and
must not specialise on sizes (dynamic shapes). Every such branch asks `tracing()`; the core's kernels
decide here, the layers' compile-only logic lives in `layers.checkpointing`.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """Whether torch.compile (Dynamo / AOTAutograd) is tracing the current call."""
    return torch.compiler.is_compiling()
