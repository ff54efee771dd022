"""`packed_attention`: scaled dot-product attention whose probability-dropout mask is kept packed.

What is saved for backward (B, H, Sq, Sk = batch, heads, query and key lengths, D = head dim):

- q and k (for the score matmul), v, and the softmax output `probs` once (4 bytes per score in
  float32): the softmax's saved output and the dropout-matmul's saved input are the same tensor;
- the dropout mask as a PackedBool: Sq * Sk * bits / 8 bytes per (batch, head);
- nothing for the attention mask: it becomes an additive -inf bias, and addition saves nothing.

Eager attention with F.dropout (Hugging Face's eager path) saves probs, a float noise tensor and
the dropped probs, i.e. 12 bytes per score in float32; this saves 4 bytes + 1 bit per score.
Fused SDPA kernels (flash / memory-efficient, CUDA) regenerate their dropout mask and store none;
call ``F.scaled_dot_product_attention`` directly where they apply and no mask is needed afterwards.
"""

from __future__ import annotations

import math

import torch

from bittensor_core import PackedBool
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError

from .bernoulli_mask import BernoulliMask
from .mask_type import apply_mask
from .options import MaskStorage, check_floating, check_p


class ProbsDropoutMatmul(BernoulliMask):
    """Mask type: ``out = dropout(probs) @ v`` with the element-wise dropout mask on probs.

    Inputs ``(probs (..., Sq, Sk), v (..., Sk, D))``; saves probs and v (probs is also the
    softmax's saved output, so it is stored once); the dropped probs are never kept.
    """

    def __init__(self, p: float) -> None:
        super().__init__(p)

    def apply(self, mask: torch.Tensor, probs: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        (v,) = others
        return torch.matmul(super().apply(mask, probs), v)

    def save(self, probs: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (probs, *others)

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor, ...]:
        probs, v = saved
        noise = self.noise(mask, probs)
        grad_v = torch.matmul((probs * noise).transpose(-2, -1), grad_out)
        return torch.matmul(grad_out, v.transpose(-2, -1)).mul_(noise), grad_v


def packed_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, *, bits: int = 1,
    unpack: str = "lazy", storage: str = "packed", training: bool = True, sampler: str = "exact",
) -> torch.Tensor:
    """Attention ``softmax(q k^T * scale + mask) @ v`` with dropout on the probabilities, mask packed.

    Args:
        query: (B, H, Sq, D).
        key, value: (B, H, Sk, D) and (B, H, Sk, Dv); same head count as query (repeat kv heads
            for grouped-query attention before calling).
        attn_mask: broadcastable to (B, H, Sq, Sk): bool or PackedBool (True = attend, as SDPA)
            or float (added to the scores).
        dropout_p: dropout probability on the attention probabilities (applied only if `training`).
        is_causal: hide future keys: query i sees keys 0..i (top-left aligned, as SDPA's is_causal;
            for a kv cache pass ``padding_causal_mask(...)`` instead); combined with attn_mask.
        scale: score scale, default 1 / sqrt(D).
        bits, unpack, storage, sampler: how the dropout mask is kept and drawn (`MaskStorage`).
        training: False disables dropout (SDPA has no such flag; modules pass self.training).

    Returns:
        (B, H, Sq, Dv). Rows with every key masked give zeros (like SDPA's math path).

    Example:
        >>> q = k = v = torch.randn(2, 4, 16, 8, requires_grad=True)
        >>> out = packed_attention(q, k, v, is_causal=True, dropout_p=0.1)   # (2, 4, 16, 8)
    """
    p = check_p(dropout_p)
    options = MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler)
    _check_qkv(query, key, value)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = torch.matmul(query, key.transpose(-2, -1)).mul_(scale)
    bias = _bias(attn_mask, is_causal, query, key)
    if bias is None:
        probs = torch.softmax(scores, dim=-1)
    else:
        probs = torch.ops.aten._safe_softmax(scores.add_(bias), -1)  # fully masked rows -> 0, as SDPA
    if not training or p == 0.0:
        return torch.matmul(probs, value)
    if p == 1.0:
        return torch.matmul(probs * 0.0, value)
    return apply_mask(ProbsDropoutMatmul(p), probs, value, storage=options)


def _check_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_floating(t, name)
        if t.dim() != 4:
            raise PackedBoolValueError(f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(t.shape)}.")
    if not (query.shape[1] == key.shape[1] == value.shape[1]):
        raise PackedBoolValueError(
            f"head count mismatch: query has {query.shape[1]} heads, key {key.shape[1]}, value "
            f"{value.shape[1]}; repeat key/value heads first for grouped-query attention."
        )
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise PackedBoolValueError(
            f"shape mismatch: query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}; "
            "need query/key head dims equal and key/value sequence lengths equal."
        )


def _bias(
    attn_mask: torch.Tensor | None, is_causal: bool, query: torch.Tensor, key: torch.Tensor
) -> torch.Tensor | None:
    """The attention mask as an additive float bias (0 / -inf, or the float mask itself)."""
    sq, sk = query.shape[-2], key.shape[-2]
    keep = None
    if is_causal:
        keep = torch.ones(sq, sk, dtype=torch.bool, device=query.device).tril()
    if attn_mask is None:
        return None if keep is None else _to_bias(keep, query.dtype)
    if isinstance(attn_mask, PackedBool):
        attn_mask = attn_mask.unpack()
    if attn_mask.dtype == torch.bool:
        return _to_bias(attn_mask if keep is None else attn_mask & keep, query.dtype)
    if not attn_mask.is_floating_point():
        raise PackedBoolTypeError(
            f"attn_mask must be bool, PackedBool or float, got dtype={attn_mask.dtype}; use mask.bool() for 0/1 masks."
        )
    return attn_mask if keep is None else attn_mask + _to_bias(keep, attn_mask.dtype)


def _to_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, float("-inf"))
