"""`packed_attention`: scaled dot-product attention that keeps only its inputs and a packed dropout mask.

With dropout, SDPA on CPU runs its math path and saves for backward the (B, H, Sq, Sk) scores'
softmax, the float dropout noise and the dropped probabilities: 12 bytes per score in float32.
`packed_attention` draws the dropout mask first (the same generator calls as SDPA's dropout, so the
same mask), keeps it at `bits` bits per score, and runs the attention core under
``torch.utils.checkpoint`` (non-reentrant): forward saves nothing inside the core, and backward
recomputes it from q, k, v, the attention mask and the packed mask, letting autograd replay the
very same aten ops. The core is SDPA's own math path (`attention_core.sdpa_math`) with dropout
``attn * noise``, the noise decoded from the packed bits, which is what at::dropout computes. So
outputs and gradients equal SDPA's bit for bit on any CPU, and what stays alive per call is
q, k, v, the mask (1 bit per score; 0 with ``storage="seeded"``: the checkpoint replays the draw
from the saved generator state instead) and a bool / packed attention mask if one was given.
The price is one more forward of the core in backward.

Where the math path would not run, `packed_attention` calls ``F.scaled_dot_product_attention``
itself, which keeps no (B, H, Sq, Sk) tensor at all: no dropout (eval, p = 0: the flash kernel on
CPU) and, on CUDA, every call a fused kernel (flash / memory-efficient / cuDNN, which regenerate
their dropout mask) accepts, as torch's own ``can_use_*_attention`` checks decide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from bittensor_core import PackedBool, kernels, plain_bool, unpack_scaled
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError

from .attention_core import sdpa_math
from .checkpointing import checkpoint_core, checkpoint_mask, checkpointed_mask
from .flash_attn import can_delegate
from .float_masks import BinaryFloatMask
from .kept_draw import kept_draw
from .noise import noise_scale
from .options import MaskStorage, check_floating, check_p
from .samplers import draw_packed, get_sampler

__all__ = ["DropoutSpec", "attention_backend", "attention_dropout", "attention_with", "packed_attention"]


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    enable_gqa: bool = False,
    bits: int = 1,
    unpack: str = "lazy",
    storage: str = "packed",
    training: bool = True,
    sampler: str = "exact",
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with the same results, keeping its dropout mask packed.

    Args:
        query: (B, H, Sq, D).
        key, value: (B, Hkv, Sk, D) and (B, Hkv, Sk, Dv); Hkv = H, or divides H with `enable_gqa`.
        attn_mask: broadcastable to (B, H, Sq, Sk): bool or PackedBool (True = attend, as SDPA)
            or float (added to the scores); on query's device.
        dropout_p: dropout probability on the attention probabilities (applied only if `training`).
        is_causal: query i sees keys 0..i (top-left, as SDPA); not together with attn_mask (as
            SDPA; for a kv cache pass ``padding_causal_mask(...)`` as attn_mask instead).
        scale: score scale, default 1 / sqrt(D).
        enable_gqa: repeat key / value heads for grouped-query attention, as SDPA.
        bits, unpack, storage, sampler: how the dropout mask is kept and drawn (`MaskStorage`).
        training: False disables dropout (SDPA has no such flag; modules pass self.training).

    Returns:
        (B, H, Sq, Dv), bit-identical to ``F.scaled_dot_product_attention`` with the same
        arguments and seed (CPU; ``sampler="exact"``). Fully masked rows give zeros.

    Example:
        >>> q = k = v = torch.randn(2, 4, 16, 8, requires_grad=True)
        >>> out = packed_attention(q, k, v, is_causal=True, dropout_p=0.1)   # (2, 4, 16, 8)
    """
    options = MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler)
    return attention_with(
        options,
        query,
        key,
        value,
        attn_mask,
        dropout_p,
        is_causal,
        scale,
        enable_gqa=enable_gqa,
        training=training,
    )


def attention_with(
    options: MaskStorage,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    enable_gqa: bool = False,
    training: bool = True,
) -> torch.Tensor:
    """`packed_attention` with the mask's options as one `MaskStorage` (what the transformers route calls).

    Example:
        >>> out = attention_with(MaskStorage(bits=2), q, k, v, dropout_p=0.1)
    """
    p = check_p(dropout_p) if training else 0.0
    _check_inputs(query, key, value, attn_mask, is_causal, enable_gqa)
    device = query.device.type
    if torch.is_autocast_enabled(device):  # what autocast does around SDPA (a lower-precision op)
        dtype = torch.get_autocast_dtype(device)
        cast = [t.to(dtype) if _autocast_eligible(t) else t for t in (query, key, value, attn_mask)]
        with torch.autocast(device, enabled=False):
            return attention_with(
                options, *cast, dropout_p, is_causal, scale, enable_gqa=enable_gqa, training=training
            )
    if attention_backend(query, key, value, attn_mask, p, is_causal, enable_gqa) == "sdpa":
        return F.scaled_dot_product_attention(
            query, key, value, plain_bool(attn_mask), p, is_causal, scale=scale, enable_gqa=enable_gqa
        )
    mask_spec, attn_mask = checkpoint_mask(attn_mask)
    drop, keep = attention_dropout(p, query, key, options)
    core = partial(_core, drop, mask_spec, is_causal, scale, enable_gqa)
    # preserve_rng_state: with storage="seeded" the core draws the mask itself and the recompute
    # replays that draw from the saved generator state.
    return checkpoint_core(core, query, key, value, attn_mask, keep, preserve_rng_state=drop.seeded)


def attention_backend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool,
    enable_gqa: bool = False,
    *,
    flash: bool = False,
) -> str:
    """Which kernel runs an attention call: the one decision of the sdpa and eager paths.

    - ``"flash_attn"``: flash-attn's kernel (only if `flash` allows it and `flash_attn.can_delegate`);
    - ``"sdpa"``: ``F.scaled_dot_product_attention`` itself, which keeps no (B, H, Sq, Sk) tensor: no
      dropout, an empty head dim, or on CUDA a fused kernel (flash / memory-efficient / cuDNN) takes the
      call by torch's own checks (those kernels keep O(Sq) statistics and regenerate their dropout mask);
    - ``"packed"``: SDPA's math path, recomputed in backward, its dropout mask kept packed.
    """
    if flash and can_delegate(query, attn_mask):
        return "flash_attn"
    if dropout_p == 0.0 or query.shape[-1] == 0:
        return "sdpa"
    if query.device.type != "cuda":
        return "packed"
    params = torch.backends.cuda.SDPAParams(
        query, key, value, plain_bool(attn_mask), dropout_p, is_causal, enable_gqa
    )
    checks = (
        torch.backends.cuda.can_use_flash_attention,
        torch.backends.cuda.can_use_efficient_attention,
        torch.backends.cuda.can_use_cudnn_attention,
    )
    return "sdpa" if any(check(params, False) for check in checks) else "packed"


def attention_dropout(
    p: float, query: torch.Tensor, key: torch.Tensor, options: MaskStorage
) -> tuple[DropoutSpec, torch.Tensor | None]:
    """The dropout of the (B, H, Sq, Sk) probabilities of ``attention(query, key, ...)`` and its packed mask,
    drawn now (`DropoutSpec.draw`): the one builder of the sdpa and eager paths."""
    shape = (query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    drop = DropoutSpec(p, shape, options)
    return drop, drop.draw(query)


@dataclass(frozen=True)
class DropoutSpec:
    """A (B, H, Sq, Sk) attention-dropout mask drawn before the attention core and replayed inside it.

    Attributes: p, shape, options (the whole `MaskStorage`: width, sampler, and whether the mask is
    seeded: drawn inside the core, under a checkpoint that preserves the generator state, instead of
    kept as bits).
    """

    p: float
    shape: tuple[int, ...]
    options: MaskStorage

    @property
    def seeded(self) -> bool:
        return self.options.seeded

    def draw(self, like: torch.Tensor) -> torch.Tensor | None:
        """The packed mask (uint8 rows), drawn with F.dropout's generator calls; None when seeded
        or p = 1 (at::dropout draws nothing then)."""
        if self.seeded or self.p == 1.0:
            return None
        # A 0-dim `like`: the mask is drawn contiguous, as F.dropout's empty_like(probs) is. (Passing
        # q itself would lend it q's strides whenever q has the probabilities' shape, Sk == D.)
        return kept_draw(self.draw_like, like.new_empty(()))

    def draw_like(self, like: torch.Tensor) -> torch.Tensor:
        """The packed mask drawn in the layout of `like` when it has the mask's shape (F.dropout draws
        into ``empty_like(input)``: a transposed input is drawn in its own memory order)."""
        key = get_sampler(self.options.sampler).key(
            like.device, replay=False
        )  # the fast sampler's seed; None for exact
        return draw_packed(self.options.sampler, key, self.shape, 1.0 - self.p, like, self.options.bits)

    def dropout(self, keep: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """``attn -> attn * noise``: at::dropout's op on CPU, its noise decoded from packed bytes
        `keep` (drawn here when seeded; none at all for p = 1, where at::dropout multiplies by 0).
        On CUDA at::dropout is native_dropout, whose arithmetic is ``_masked_scale`` (unverified on a GPU)."""

        def apply(attn: torch.Tensor) -> torch.Tensor:
            if tuple(attn.shape) != self.shape:
                raise PackedBoolValueError(
                    f"dropout input has shape {tuple(attn.shape)}, the mask drawn for it {self.shape}."
                )
            if self.p == 1.0:
                return attn * torch.zeros((), dtype=attn.dtype, device=attn.device)
            bits = keep if keep is not None else self.draw_like(attn)
            if attn.device.type == "cuda":
                mask = kernels.unpack(bits, self.shape, self.options.bits)
                return torch.ops.aten._masked_scale(attn, mask, 1.0 / (1.0 - self.p))
            noise = unpack_scaled(
                bits, self.shape, self.options.bits, noise_scale(self.p, attn.dtype, attn.device)
            )
            if (
                not attn.is_contiguous()
            ):  # F.dropout's noise is empty_like(input): the product takes its layout
                noise = torch.empty_like(attn).copy_(noise)
            return attn * noise

        return apply


def _core(
    drop: DropoutSpec,
    mask_spec: tuple | None,
    is_causal: bool,
    scale: float | None,
    enable_gqa: bool,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | BinaryFloatMask | None,
    keep: torch.Tensor | None,
) -> torch.Tensor:
    attn_mask = checkpointed_mask(attn_mask, mask_spec)
    return sdpa_math(query, key, value, attn_mask, drop.dropout(keep), is_causal, scale, enable_gqa)


def _autocast_eligible(t: torch.Tensor | None) -> bool:
    return (
        t is not None
        and not isinstance(t, PackedBool)
        and t.dtype in (torch.float32, torch.float16, torch.bfloat16)
    )


def _check_inputs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    enable_gqa: bool,
) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_floating(t, name)
        if t.dim() != 4:
            raise PackedBoolValueError(
                f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(t.shape)}."
            )
    heads, kv_heads = query.shape[1], key.shape[1]
    if key.shape[1] != value.shape[1] or (
        heads != kv_heads and not (enable_gqa and kv_heads and heads % kv_heads == 0)
    ):
        raise PackedBoolValueError(
            f"head count mismatch: query has {heads} heads, key {kv_heads}, value {value.shape[1]}; key and value"
            " need the query's head count, or a divisor of it with enable_gqa=True (grouped-query attention)."
        )
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise PackedBoolValueError(
            f"shape mismatch: query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}; "
            "need query/key head dims equal and key/value sequence lengths equal."
        )
    if attn_mask is None:
        return
    if attn_mask.device != query.device:
        raise PackedBoolValueError(
            f"attn_mask is on {attn_mask.device} but query is on {query.device}; move the mask to {query.device}."
        )
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise PackedBoolTypeError(
            f"attn_mask must be bool, PackedBool or float, got dtype={attn_mask.dtype}; use mask.bool() for 0/1 masks."
        )
    if is_causal:
        raise PackedBoolValueError(
            "pass either attn_mask or is_causal=True, not both (as SDPA); fold the causal"
            " pattern into the mask, e.g. with padding_causal_mask(..., causal=True)."
        )
