"""SDPA's math path, op for op, with its dropout taken from a given function.

This is torch 2.13's ``_scaled_dot_product_attention_math`` (ATen, attention.cpp), the path
``F.scaled_dot_product_attention`` takes on CPU whenever dropout is on (its flash kernel refuses
dropout), and on CUDA when no fused kernel accepts the call:

    q * sqrt(scale) and k^T * sqrt(scale)  (q * -sqrt(|scale|) for a negative scale)
    scores = matmul(q, k^T) [+ bias]       bool mask -> where(mask, 0, -inf); is_causal -> tril bias
    attn = _safe_softmax(scores, -1)       fully masked rows give 0
    attn = dropout(attn)                   at::dropout on CPU: attn * noise, noise = bernoulli / (1-p)
    out = matmul(attn, v)

with float16 / bfloat16 inputs computed in float32 (unless
``torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(True)``) and ``enable_gqa`` repeating
key / value heads with ``repeat_interleave``. `sdpa_math` runs the very same aten ops on the same
layouts, so with the same dropout noise its output, and through autograd its gradients, equal
``F.scaled_dot_product_attention``'s bit for bit (tests/layers/test_attention.py checks it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from bittensor_core.tracing import constant, tracing

__all__ = ["sdpa_math"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def sdpa_math(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout: Callable[[torch.Tensor], torch.Tensor] | None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``'s math path with ``dropout(attn)`` as its dropout op.

    Args:
        query: (B, H, Sq, D); key, value: (B, Hkv, Sk, D) and (B, Hkv, Sk, Dv).
        attn_mask: None, bool (True = attend) or float (added), broadcastable to (B, H, Sq, Sk).
        dropout: maps the (B, H, Sq, Sk) probabilities to their dropped version (None: no dropout).
        is_causal, scale, enable_gqa: as for SDPA (a mask with is_causal is SDPA's error too).

    Returns:
        (B, H, Sq, Dv) in query's dtype.

    Example:
        >>> out = sdpa_math(q, k, v, None, lambda a: a * noise)   # == SDPA with that dropout noise
    """
    origin = query.dtype
    if origin in _LOW_PRECISION and not torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed():
        query, key, value = query.to(torch.float32), key.to(torch.float32), value.to(torch.float32)
    if enable_gqa:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], -3)
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], -3)
    if scale is None:
        root = math.sqrt(1.0 / math.sqrt(query.shape[-1])) if query.shape[-1] else math.inf
    else:
        root = math.sqrt(abs(scale))
    scores = torch.matmul(
        query * (0.0 - root if scale is not None and scale < 0 else root), key.transpose(-2, -1) * root
    )
    bias = _bias(attn_mask, is_causal, query, key)
    if bias is not None:
        scores = scores + bias
    attn = torch.ops.aten._safe_softmax(scores, -1)
    if dropout is not None:
        attn = dropout(attn)
    return torch.matmul(attn, value).to(origin)


def _bias(
    attn_mask: torch.Tensor | None, is_causal: bool, query: torch.Tensor, key: torch.Tensor
) -> torch.Tensor | None:
    """SDPA's additive bias: the float mask, a bool mask as 0 / -inf, or the causal tril as 0 / -inf."""
    if is_causal:
        attn_mask = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
    if attn_mask is None or attn_mask.dtype != torch.bool:
        return attn_mask
    if tracing():  # the same values as constants kept per layer: see NOTE (CSE) in layers.checkpointing
        zero, neg_inf = (constant(v, query.dtype, attn_mask.device) for v in (0.0, -math.inf))
        return torch.where(attn_mask, zero, neg_inf)
    neg_inf = torch.scalar_tensor(-math.inf, dtype=query.dtype, device=attn_mask.device)
    return torch.where(attn_mask, 0.0, neg_inf)
