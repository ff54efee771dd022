"""Padding + causal attention masks built directly as PackedBool (True = attend).

The (B, 1, q_len, kv_len) mask is assembled from packed rows: the causal rows of
`bittensor_core.causal_rows` and the packed attention_mask row; their AND is taken byte-wise. The bool mask is never
materialized, so building it costs q_len * kv_len * bits / 8 bytes per batch row, not q_len * kv_len.
"""

from __future__ import annotations

import torch

from bittensor_core import PackedBool, causal_rows, kernels, row_bytes
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from bittensor_core.layout import check_bits


def padding_causal_mask(
    attention_mask_2d: torch.Tensor | None,
    q_len: int,
    kv_len: int,
    *,
    causal: bool,
    bits: int = 1,
    device: torch.device | str | None = None,
) -> PackedBool:
    """Attention mask of shape (B, 1, q_len, kv_len) as a PackedBool, True where a query may attend.

    Args:
        attention_mask_2d: (B, kv_len) with 1/True for real tokens and 0/False for padding (the
            Hugging Face convention), or None (no padding, B = 1).
        q_len, kv_len: query and key lengths. Queries are the last q_len positions of the kv_len
            keys, so with a cache (kv_len > q_len) query i sees keys 0 .. i + kv_len - q_len.
        causal: also hide future keys.
        bits: storage width (1, 2, 4, 8).
        device: where to build it when `attention_mask_2d` is None (default CPU).

    Example:
        >>> m = padding_causal_mask(torch.tensor([[1, 1, 1, 0]]), 4, 4, causal=True)
        >>> m.unpack()[0, 0].int()
        tensor([[1, 0, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 0],
                [1, 1, 1, 0]], dtype=torch.int32)
    """
    check_bits(bits)
    for name, n in (("q_len", q_len), ("kv_len", kv_len)):
        if isinstance(n, bool) or not isinstance(n, int):
            raise PackedBoolTypeError(
                f"{name} must be an int, got {n!r} ({type(n).__name__}); pass int({name})."
            )
    if q_len < 0 or kv_len < 0 or (causal and q_len > kv_len):
        raise PackedBoolValueError(
            f"need 0 <= q_len <= kv_len for a causal mask, got q_len={q_len}, kv_len={kv_len}."
        )
    if attention_mask_2d is not None:
        if attention_mask_2d.dim() != 2 or attention_mask_2d.shape[1] != kv_len:
            raise PackedBoolValueError(
                f"attention_mask_2d must have shape (batch, kv_len={kv_len}), got {tuple(attention_mask_2d.shape)}."
            )
        if attention_mask_2d.is_floating_point() or attention_mask_2d.is_complex():
            raise PackedBoolTypeError(
                f"attention_mask_2d must be bool or integer 0/1, got dtype={attention_mask_2d.dtype}."
            )
        device = attention_mask_2d.device
    device = torch.device(device or "cpu")
    packed = causal_rows(q_len, kv_len, bits, device)[None, None] if causal else None  # (1, 1, q, rb)
    if attention_mask_2d is not None:
        pad = kernels.pack(attention_mask_2d.to(device=device, dtype=torch.bool), bits)[:, None, None, :]
        packed = pad if packed is None else packed & pad
    elif packed is None:
        packed = kernels.pack(torch.ones(1, 1, 1, kv_len, dtype=torch.bool, device=device), bits)
    batch = packed.shape[0]
    packed = packed.expand(batch, 1, q_len, row_bytes(kv_len, bits)).contiguous()
    return PackedBool.from_packed(packed, (batch, 1, q_len, kv_len), bits=bits)
