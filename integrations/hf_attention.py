"""Packed attention for transformers models, through transformers' own registries.

In transformers the attention-probability dropout is not an ``nn.Dropout`` call: each attention
module passes ``dropout=p`` to the function registered for ``config._attn_implementation``. So
`register_attention` registers, under one name,

- an attention function (``AttentionInterface``) that runs the implementation the model ran
  before patching (its `reference`: ``"sdpa"`` or ``"eager"``) with only the dropout mask's
  storage changed, and
- a mask function (``AttentionMaskInterface``) that builds the boolean mask that reference's own
  mask function builds (``sdpa_mask``; ``eager_mask`` before its float conversion), packed.

The attention function, training with dropout and grad enabled (otherwise it calls the reference
directly: in eval mode, under ``no_grad`` (exact sampler) or with p = 0 nothing is packed or checkpointed):

- ``sdpa``: transformers' own ``sdpa_attention_forward`` runs (GQA handling, causal rules, cache
  slicing: all its own), and its call to ``F.scaled_dot_product_attention`` is routed to
  `layers.packed_attention`, which is SDPA's math path op for op with the mask kept packed and
  the core recomputed in backward (see `layers.attention`);
- ``eager``: the model's own ``eager_attention_forward`` (looked up in the attention module's
  modeling file) runs under ``torch.utils.checkpoint`` with its float mask rebuilt from the
  packed mask exactly as ``eager_mask`` builds it and its ``F.dropout`` call replaced by
  ``probs * noise``, the noise decoded from a 1-bit mask drawn before the call with F.dropout's
  own generator calls. We run the model's function rather than a copy of its ops because
  architectures differ in small ways (scale before or after the matmul, head masks, casts).

Either way autograd replays the reference's own aten ops in backward, so losses and gradients are
bit-identical to the unpatched model, and per attention call only q, k, v, the packed masks and
the module's other arguments stay alive. On CUDA, flash-attn (``flash=True``) or SDPA's fused
kernels take the call where they can run (they keep no mask). `huggingface.patch_model` then
calls ``model.set_attn_implementation(name)``. Nothing in transformers is modified.

Example:
    >>> name = register_attention(MaskStorage(bits=1))      # "packedbool" (sdpa reference)
    >>> model.set_attn_implementation(name)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache, partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bittensor_core import PackedBool, plain_bool
from bittensor_core.errors import PackedBoolValueError
from layers import MaskStorage, flash_attn
from layers.attention import DropoutSpec, attention_backend, attention_dropout, attention_with
from layers.checkpointing import checkpoint_core, checkpoint_mask, checkpointed_mask, shared_attention_mask
from layers.float_masks import BinaryFloatMask, pack_float_masks, restore_float_masks

from .hf_registry import DEFAULT, register
from .replayed_attention import AttentionDropoutRoute

REFERENCES = ("sdpa", "eager")
STOCK = "_packedbool_stock"  # set on an attention module that patch_model's filters leave alone


def register_attention(options: MaskStorage = DEFAULT, *, flash: bool = True, reference: str = "sdpa") -> str:
    """Register the attention and mask functions for `options` and `reference` (idempotent); return
    their name, `hf_registry.registry_name` of the three."""
    from transformers import AttentionInterface, AttentionMaskInterface

    if reference not in REFERENCES:
        raise PackedBoolValueError(f"reference={reference!r}: packed attention reproduces only {REFERENCES}.")
    name = register(AttentionInterface, options, packed_attention_forward, flash=flash, reference=reference)
    AttentionMaskInterface.register(name, partial(packed_mask, options=options, reference=reference))
    return name


def eager_function(module: torch.nn.Module) -> Callable | None:
    """The ``eager_attention_forward`` of `module`'s modeling file (what it runs as "eager"), or None."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    *,
    options: MaskStorage = DEFAULT,
    flash: bool = True,
    reference: str = "sdpa",
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: `reference`'s results, its dropout mask packed.

    Args:
        module: the calling attention module (its ``training`` decides dropout; the reference reads
            ``is_causal``, ``num_key_value_groups``, ...). One with the `STOCK` attribute runs the
            reference unchanged (its dropout mask drawn and kept as the reference keeps it).
        query: (B, H, Sq, D); key, value: (B, Hkv, Sk, D).
        attention_mask: None, or the PackedBool (True = attend) from `packed_mask`.
        dropout: attention-probability dropout (the model passes 0 in eval mode).
        scaling: softmax scale; kwargs (is_causal, position_bias, sinks, ...) go to the reference
            unchanged, which supports what it supports.
        options: how the dropout mask is kept; flash: allow flash-attn delegation (CUDA);
        reference: "sdpa" or "eager", the implementation whose arithmetic is reproduced.

    Returns:
        (output of shape (B, Sq, H, D), None): no attention weights are kept, as with SDPA.
    """
    function = _reference_function(module, reference)
    # Eval mode (the model passes dropout 0), no dropout, no_grad or excluded by filter: nothing to pack,
    # the reference as it is. Cheapest test first, and STOCK read from __dict__ (a miss through
    # nn.Module.__getattr__ raises and catches an AttributeError): eval generate() pays for no more.
    if dropout == 0.0 or options.runs_stock(module.training) or STOCK in module.__dict__:
        mask = plain_bool(attention_mask)
        if reference == "eager" and mask is not None and not mask.is_floating_point():
            mask = _eager_mask(mask, _mask_dtype(module, query))
        out, _ = function(module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs)
        return out, None
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    causal = bool(query.shape[2] > 1 and attention_mask is None and causal)
    if attention_backend(query, key, value, attention_mask, dropout, causal, flash=flash) == "flash_attn":
        out = flash_attn.flash_attention(query, key, value, dropout, causal, scaling)
        return out.transpose(1, 2).contiguous(), None
    # T5's position_bias: the SDPA reference builds a (B, H, Sq, Sk) float mask from it per layer, which
    # stock frees after use: build it inside the checkpoint (below), not before SDPA's own.
    if reference == "sdpa" and not isinstance(kwargs.get("position_bias"), torch.Tensor):
        with _SdpaRoute(options):
            out, _ = function(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        return out, None
    dtype = _mask_dtype(module, query) if reference == "eager" else None
    drop, keep = attention_dropout(dropout, query, key, options)
    # The checkpoint keeps a packed mask's bytes, and float masks over a per-key bias as bits (layers.float_masks).
    mask_spec, attention_mask = checkpoint_mask(attention_mask)
    _, kwargs = pack_float_masks((), kwargs)
    core = partial(_reference_core, function, module, dropout, mask_spec, dtype, scaling, kwargs)
    out = checkpoint_core(
        core, query, key, value, attention_mask, keep, preserve_rng_state=drop.seeded, mode=_route(drop, keep)
    )
    return out, None


def _reference_function(module: torch.nn.Module, reference: str) -> Callable:
    if reference == "sdpa":
        return _transformers().sdpa_attention_forward
    eager = eager_function(module)
    if eager is None:
        raise PackedBoolValueError(
            f"{type(module).__name__}'s modeling file has no eager_attention_forward to reproduce;"
            " patch this model with patch_model(model, attention=False)."
        )
    return eager


def _route(drop: DropoutSpec, keep: torch.Tensor | None) -> AttentionDropoutRoute:
    """F.dropout(probs) and SDPA's dropout -> probs * noise, the noise replayed from the packed mask `keep`."""
    apply = drop.dropout(keep)
    return AttentionDropoutRoute(lambda x, p, training, inplace: apply(x) if training and p > 0 else x)


def _reference_core(
    function: Callable,
    module: torch.nn.Module,
    p: float,
    mask_spec: tuple | None,
    dtype: torch.dtype | None,
    scaling: float | None,
    kwargs: dict,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | BinaryFloatMask | None,
    keep: torch.Tensor | None,
) -> torch.Tensor:
    """The reference `function` on the checkpoint's inputs (inside the dropout route); `dtype`: the eager
    float mask's (None: SDPA's bool)."""
    mask = checkpointed_mask(mask, mask_spec)
    if mask is not None and dtype is not None:
        mask = _eager_mask(mask, dtype)
    _, kwargs = restore_float_masks((), kwargs)
    out, _ = function(module, query, key, value, mask, dropout=p, scaling=scaling, **kwargs)
    return out


def _eager_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """transformers' ``eager_mask`` from its boolean mask: 0 where True, dtype's min where False. A float
    mask is the model's own additive bias (Swin's, BEiT's relative position bias): used as it is, as eager does."""
    if mask.is_floating_point():
        return mask
    return torch.where(mask, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)


def _mask_dtype(module: torch.nn.Module, query: torch.Tensor) -> torch.dtype:
    """The dtype transformers builds the eager mask in: the model's (its embeddings') dtype."""
    param = next(module.parameters(), None)
    return query.dtype if param is None or not param.is_floating_point() else param.dtype


class _SdpaRoute(TorchFunctionMode):
    """Sends ``F.scaled_dot_product_attention`` calls to `layers.packed_attention` (same results)."""

    def __init__(self, options: MaskStorage) -> None:
        super().__init__()
        self.options = options

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        return attention_with(self.options, *args, **kwargs)


def packed_mask(
    *args: Any, options: MaskStorage = DEFAULT, reference: str = "sdpa", **kwargs: Any
) -> PackedBool | None:
    """transformers' mask-function signature: the reference's boolean mask, returned packed.

    Takes the arguments of ``transformers.masking_utils.sdpa_mask`` (batch_size, q_length,
    kv_length, offsets, mask_function, the 2D padding mask, skip flags, device, ...). For the
    eager reference the causal skip is off, as in ``eager_mask`` (eager attention has no is_causal).

    Returns:
        PackedBool of shape (B, 1, q_length, kv_length), True = attend; or None where the
        reference gets no mask either; while tracing, the plain bool mask
        (`layers.checkpointing.shared_attention_mask`); with grad disabled (``no_grad``, generation),
        the reference's own mask (``sdpa_mask``'s bool, ``eager_mask``'s float): nothing is kept
        for backward, so nothing is packed, and no layer converts it again.
    """
    functions = _transformers()
    if not torch.is_grad_enabled():
        return (functions.eager_mask if reference == "eager" else functions.sdpa_mask)(*args, **kwargs)
    if reference == "eager":
        kwargs["allow_is_causal_skip"] = False
    return shared_attention_mask(functions.sdpa_mask(*args, **kwargs), options.pack)


class _References(NamedTuple):  # a NamedTuple: dynamo builds it where the first call is traced
    sdpa_attention_forward: Callable
    eager_mask: Callable
    sdpa_mask: Callable


@cache
def _transformers() -> _References:
    """transformers' reference functions, imported on first use (packedbool imports without transformers)
    and only once: an import statement per call costs about as much as the rest of the stock path's check."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import eager_mask, sdpa_mask

    return _References(sdpa_attention_forward, eager_mask, sdpa_mask)
