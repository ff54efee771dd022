"""Delegate attention to flash-attn's `flash_attn_func` where it can run: 0 mask bits stored.

FlashAttention draws its dropout mask from a Philox seed and offset inside the kernel and
regenerates it in backward, so no mask is kept at all (the "seeded" idea, on the GPU). It runs
only on CUDA, in float16 / bfloat16, with head dim <= 256 and no arbitrary mask (padding needs
its varlen interface): `can_delegate` is the kernel's own admission test, which
`layers.attention.attention_backend` (the one attention-backend chooser) asks first.

flash-attn is an optional extra (``pip install packedbool[flash]``). It cannot even be built
without CUDA: its setup needs ``CUDA_HOME``. Without it, `flash_attn_available()` is False and
nothing here is ever called.

Example:
    >>> if can_delegate(q, attn_mask=None):          # q, k, v: (B, H, S, D) fp16 on CUDA
    ...     out = flash_attention(q, k, v, dropout_p=0.1, is_causal=True)
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch

from bittensor_core.errors import PackedBoolValueError

FLASH_DTYPES = (torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
NOT_INSTALLED = (
    "flash-attn is not installed; it is an optional CUDA-only extra whose build needs CUDA_HOME"
    " (pip install packedbool[flash] on a CUDA machine)"
)


@cache
def flash_attn_available() -> bool:
    """True when the ``flash_attn`` package can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("flash_attn") is not None


def can_delegate(query: torch.Tensor, attn_mask: torch.Tensor | None) -> bool:
    """Whether `flash_attention` can run this call: flash-attn present, CUDA, fp16/bf16, no mask.

    Args:
        query: (B, H, Sq, D).
        attn_mask: the call's mask; flash_attn_func takes none (only ``is_causal``).
    """
    return (
        attn_mask is None
        and query.is_cuda
        and query.dtype in FLASH_DTYPES
        and query.shape[-1] <= MAX_HEAD_DIM
        and flash_attn_available()
    )


def flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """`flash_attn_func` in the (B, H, S, D) layout of `F.scaled_dot_product_attention`.

    Args:
        query: (B, H, Sq, D); key, value: (B, Hkv, Sk, D) with H a multiple of Hkv (GQA is native).
        dropout_p: attention-probability dropout; the mask is regenerated from the seed, never stored.
        is_causal: causal mask aligned to the bottom-right corner (flash-attn >= 2.1), which is the
            right alignment when a KV cache makes Sk > Sq.
        scale: softmax scale, default ``D ** -0.5``.

    Returns:
        (B, H, Sq, D).
    """
    if not flash_attn_available():
        raise PackedBoolValueError(f"flash_attention needs flash-attn: {NOT_INSTALLED}.")
    if not can_delegate(query, None):
        raise PackedBoolValueError(
            f"flash_attention needs CUDA tensors in {FLASH_DTYPES} with head dim <= {MAX_HEAD_DIM};"
            f" got device={query.device}, dtype={query.dtype}, head dim={query.shape[-1]}."
            " Use layers.packed_attention for this call instead."
        )
    from flash_attn import flash_attn_func

    out = flash_attn_func(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        dropout_p=dropout_p,
        softmax_scale=scale,
        causal=is_causal,
    )
    return out.transpose(1, 2)
