"""The CUDA fast path of `packed_dropout(sampler="fast")`: one fused Triton pass each way.

Forward draws the keep-mask with Philox, writes the output and the 1-bit packed mask in one
kernel; backward reads the packed mask and the gradient in one kernel (no bool tensor is ever
materialised). Used when the input is on CUDA, Triton is installed, bits=1, and the dtype is
float16 / bfloat16 / float32. The mask is not nn.Dropout's (NOTE(philox) in `layers/kernels/triton_dropout.py`).
"""

from __future__ import annotations

from typing import Any

import torch

from bittensor_core import saved_mask_bytes
from bittensor_core.kernels import triton_available
from bittensor_core.tracing import tracing

from .kernels.dropout_params import FUSED_DTYPES, draw_seed
from .options import MaskStorage


def can_fuse(x: torch.Tensor, options: MaskStorage, inplace: bool) -> bool:
    """Is the fused Triton path available for this call (CUDA tensors only)?"""
    return (
        x.device.type == "cuda"
        and options.sampler == "fast"
        and options.bits == 1
        and not inplace
        and x.dtype in FUSED_DTYPES
        and triton_available()
        and not tracing()
    )


class FusedDropoutFunction(torch.autograd.Function):
    """Dropout through the fused kernels; saves the packed mask (or, seeded, only the seed).

    Device-agnostic itself: on CPU it runs under ``TRITON_INTERPRET=1`` (how the tests run it).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, options: MaskStorage) -> torch.Tensor:
        from .kernels.triton_dropout import fused_dropout_forward  # imports Triton: only when used

        seed = draw_seed()
        y, packed = fused_dropout_forward(x, p, seed)
        if options.seeded:
            ctx.save_for_backward(torch.tensor(seed, dtype=torch.int64))
        else:
            ctx.save_for_backward(saved_mask_bytes(packed))
        ctx.p, ctx.seeded = p, options.seeded
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        from .kernels.triton_dropout import fused_dropout_backward, fused_dropout_seeded_backward

        (kept,) = ctx.saved_tensors
        if ctx.seeded:
            return fused_dropout_seeded_backward(grad, ctx.p, int(kept)), None, None
        return fused_dropout_backward(grad, kept, ctx.p), None, None
