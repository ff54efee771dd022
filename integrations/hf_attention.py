"""Packed attention for transformers models, through transformers' own registries.

In transformers the attention-probability dropout is not an ``nn.Dropout`` call: each attention
module passes ``dropout=p`` to the function registered for ``config._attn_implementation``. So
`register_attention` registers, under one name,

- an attention function (``AttentionInterface``) that runs `layers.packed_attention`, which keeps
  the (B, H, Sq, Sk) dropout mask at `bits` bits (or delegates to flash-attn on CUDA, 0 bits), and
- a mask function (``AttentionMaskInterface``) that builds the model's boolean padding / causal /
  sliding-window mask exactly as transformers' ``sdpa_mask`` does and returns it as a PackedBool.
  Without a mask function under the same name transformers passes no mask at all.

`huggingface.patch_model` then calls ``model.set_attn_implementation(name)``. Nothing in
transformers is modified; the name encodes the options, so two models patched with different
options coexist.

Example:
    >>> name = register_attention(MaskStorage(bits=1))      # "packedbool"
    >>> model.set_attn_implementation(name)
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from bittensor_core import PackedBool
from bittensor_core.errors import PackedBoolValueError
from layers import MaskStorage, packed_attention

from . import flash_attn

NAME = "packedbool"
DEFAULT = MaskStorage()
# Attention extras some architectures pass that packed_attention does not implement (attention
# sinks, logit soft-capping, relative position bias): refuse them rather than silently drop them.
UNSUPPORTED_KWARGS = ("s_aux", "sinks", "softcap", "position_bias")


def registry_name(options: MaskStorage, *, flash: bool = True) -> str:
    """The transformers registry name for these options: ``"packedbool"`` for the defaults, else
    with a suffix (shared by the attention, mask and experts registries).

    The suffix never contains "sdpa", "flash" or "flex": transformers reads those substrings.

    Example:
        >>> registry_name(MaskStorage()), registry_name(MaskStorage(bits=4, unpack="cached"))
        ('packedbool', 'packedbool-b4-cached')
    """
    parts = [] if options.bits == 1 else [f"b{options.bits}"]
    parts += [] if options.unpack == "lazy" else [options.unpack]
    parts += [] if options.storage == "packed" else [options.storage]
    parts += [] if options.sampler == "exact" else [options.sampler]
    parts += [] if flash else ["nofa"]
    return "-".join([NAME, *parts])


def register_attention(options: MaskStorage = DEFAULT, *, flash: bool = True) -> str:
    """Register the attention and mask functions for `options` (idempotent); return their name."""
    from transformers import AttentionInterface, AttentionMaskInterface

    name = registry_name(options, flash=flash)
    AttentionInterface.register(name, partial(packed_attention_forward, options=options, flash=flash))
    AttentionMaskInterface.register(name, partial(packed_mask, options=options))
    return name


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    *,
    options: MaskStorage = DEFAULT,
    flash: bool = True,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature on top of `layers.packed_attention`.

    Args:
        module: the calling attention module (its ``training``, ``is_causal`` and
            ``num_key_value_groups`` are read, as transformers' SDPA function does).
        query: (B, H, Sq, D); key, value: (B, Hkv, Sk, D).
        attention_mask: None, a PackedBool / bool (True = attend) or an additive float mask,
            broadcastable to (B, H, Sq, Sk).
        dropout: attention-probability dropout (the model passes 0 in eval mode).
        scaling: softmax scale, default ``D ** -0.5``.
        is_causal: overrides ``module.is_causal``; used only when no mask is given.

    Returns:
        (output of shape (B, Sq, H, D), None): no attention weights are kept, as with SDPA.
    """
    bad = sorted(k for k in UNSUPPORTED_KWARGS if kwargs.get(k) is not None)
    if bad:
        raise PackedBoolValueError(
            f"{type(module).__name__} passes {bad} to its attention function, which packed attention"
            " does not implement; patch this model with patch_model(model, attention=False)."
        )
    q_len, kv_len = query.shape[2], key.shape[2]
    # Same rule as transformers' sdpa_attention_forward: is_causal only when no mask is given.
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_len > 1 and attention_mask is None and causal)
    if flash and flash_attn.can_delegate(query, attention_mask):
        out = flash_attn.flash_attention(query, key, value, dropout, causal, scaling)
        return out.transpose(1, 2).contiguous(), None

    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention: packed_attention takes equal head counts
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if causal and kv_len > q_len:  # a pre-filled static cache: torch's causal mask is top-left aligned
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    out = packed_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        is_causal=causal,
        scale=scaling,
        bits=options.bits,
        unpack=options.unpack,
        storage=options.storage,
        sampler=options.sampler,
        training=module.training,
    )
    return out.transpose(1, 2).contiguous(), None


def packed_mask(*args: Any, options: MaskStorage = DEFAULT, **kwargs: Any) -> PackedBool | None:
    """transformers' mask-function signature: ``sdpa_mask``'s boolean mask, returned packed.

    Takes the arguments of ``transformers.masking_utils.sdpa_mask`` (batch_size, q_length,
    kv_length, offsets, mask_function, the 2D padding mask, skip flags, device, ...).

    Returns:
        PackedBool of shape (B, 1, q_length, kv_length), True = attend; or None where no mask is
        needed (full bidirectional attention without padding, or a plain causal mask that
        ``is_causal`` expresses).
    """
    from transformers.masking_utils import sdpa_mask

    mask = sdpa_mask(*args, **kwargs)
    if mask is None:
        return None
    return PackedBool(mask, bits=options.bits, unpack=options.unpack)
