"""Attention computed outside transformers' AttentionInterface: recomputed in backward, its dropout masks replayed from bits.

About 20 architectures compute attention in their own module code instead of dispatching to a
registered attention function (Longformer, BigBird, BLOOM, Falcon, DeBERTa, XLNet, Funnel, LED,
RoFormer, MPNet, ...): softmax, then dropout on the probabilities, by an ``nn.Dropout`` module or by
``F.dropout(probs, p=self.dropout)`` on a float attribute, or by handing its ``p`` to
``F.scaled_dot_product_attention``. `attention_cores` finds those modules from the model's own
structure (below); `replay` gives each an instance ``forward`` (a ``functools.partial`` of the
module-level `replayed_forward`: picklable) that, in training with gradients and while no kv cache
is being written (a recompute would write it twice), runs the module's own forward under a
non-reentrant checkpoint (`layers.checkpointing`) inside a `layers.DropoutTape` scope:

- every dropout in it (F.dropout, ``PackedDropout`` modules) draws with F.dropout's generator calls
  and keeps its mask at `bits` bits; the recompute in backward takes the masks back from their bits;
- an ``F.scaled_dot_product_attention`` call with dropout runs SDPA's math path
  (`layers.attention_core.sdpa_math`) with the tape's dropout (`AttentionDropoutRoute`), as
  `layers.packed_attention` does;
- {0, min} float masks among the module's arguments are kept as bits (`layers.float_masks`).

So the (B, H, S, S) float probabilities and dropout noise are not kept, only the module's inputs and
1 bit per dropped element; the recompute runs the module's own ops again: bit-identical. Elsewhere
(eval, no_grad, a cache being written, torch.compile tracing, inside an enclosing activation
checkpoint) the module runs its own forward unchanged.

The attention core of a module tree: a module whose class name contains "Attention", that defines
its own forward, contains no other such module, and applies dropout (a dropout module child with
p > 0, or a positive float attribute named ``*dropout*``).

Example:
    >>> replay(model, MaskStorage(), skip=lambda path: False)   # model(**batch).loss.backward() as before
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bittensor_core.tracing import tracing
from layers import MaskStorage, PackedDropout
from layers.attention_core import sdpa_math
from layers.checkpointing import checkpoint, inside_checkpoint
from layers.float_masks import pack_float_masks, restore_float_masks
from layers.replayed_dropout import DropoutTape

from .functional_dropout import DropoutRoute

RECOMPUTED = "_packedbool_recomputed"  # set on a module once its forward has run recomputed
_DROPOUTS = (nn.modules.dropout._DropoutNd, PackedDropout)
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
_AUTOCAST = (torch.float32, torch.float16, torch.bfloat16)


def attention_cores(model: nn.Module, skip: Callable[[str], bool]) -> list[tuple[str, nn.Module]]:
    """(path, module) of the attention cores of `model` (see the module docstring) that `skip` keeps."""
    return [(path, m) for path, m in model.named_modules() if _is_core(m) and not skip(path)]


def replay(modules: list[nn.Module], options: MaskStorage) -> None:
    """Give each module the instance forward `replayed_forward`; ``del module.forward`` undoes it."""
    for module in modules:
        params = list(inspect.signature(module.forward).parameters)
        caches = tuple(i for i, name in enumerate(params) if _is_cache_name(name))
        module.forward = partial(replayed_forward, module, options, caches)


def replayed_forward(
    module: nn.Module, options: MaskStorage, caches: tuple[int, ...], *args: Any, **kwargs: Any
) -> Any:
    """``type(module).forward(module, *args, **kwargs)``, recomputed in backward with its dropout masks
    replayed from bits where it would keep (B, H, S, S) tensors (training, gradients, no cache written).

    `caches`: positions of the forward's parameters named like a kv cache ("past", "cache").
    """
    forward = type(module).forward
    if (
        not module.training
        or not torch.is_grad_enabled()
        or tracing()
        or inside_checkpoint()
        or _writes_cache(caches, args, kwargs)
    ):
        return forward(module, *args, **kwargs)
    object.__setattr__(module, RECOMPUTED, True)
    args, kwargs = pack_float_masks(args, kwargs)
    # preserve_rng_state: the masks come back from the tape; anything else random inside draws again
    # from the same generator state.
    return checkpoint(
        _region, forward, module, DropoutTape(options), *args, preserve_rng_state=True, **kwargs
    )


def _region(forward: Callable, module: nn.Module, tape: DropoutTape, *args: Any, **kwargs: Any) -> Any:
    args, kwargs = restore_float_masks(args, kwargs)
    with tape.scope(), AttentionDropoutRoute(tape.dropout):
        return forward(module, *args, **kwargs)


class AttentionDropoutRoute(DropoutRoute):
    """`DropoutRoute` that also answers ``F.scaled_dot_product_attention`` calls with dropout: SDPA's math
    path (`layers.attention_core.sdpa_math`, its ops) with ``drop(probs, p, True, False)`` as its dropout,
    so that dropout too is one the caller keeps and replays. Calls without dropout run SDPA itself."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is not F.scaled_dot_product_attention:
            return super().__torch_function__(func, types, args, kwargs)
        call = dict(zip(_SDPA_ARGS, args, strict=False)) | (kwargs or {})
        p = call.get("dropout_p", 0.0)
        if p == 0.0:
            return func(*args, **(kwargs or {}))
        q, k, v, mask = call["query"], call["key"], call["value"], call.get("attn_mask")
        drop = partial(self.drop, p=p, training=True, inplace=False)
        run = partial(
            sdpa_math,
            dropout=drop,
            is_causal=call.get("is_causal", False),
            scale=call.get("scale"),
            enable_gqa=call.get("enable_gqa", False),
        )
        device = q.device.type
        if not torch.is_autocast_enabled(device):
            return run(q, k, v, mask)
        # what autocast does around SDPA (one lower-precision op), not op by op inside its math path
        dtype = torch.get_autocast_dtype(device)
        cast = [t.to(dtype) if t is not None and t.dtype in _AUTOCAST else t for t in (q, k, v, mask)]
        with torch.autocast(device, enabled=False):
            return run(*cast)


def _is_core(module: nn.Module) -> bool:
    if "Attention" not in type(module).__name__ or type(module).forward is nn.Module.forward:
        return False
    if any("Attention" in type(m).__name__ for m in list(module.modules())[1:]):
        return False
    drops = any(isinstance(c, _DROPOUTS) and c.p > 0 for c in module.children())
    return drops or any("dropout" in attr and type(v) is float and v > 0 for attr, v in vars(module).items())


def _is_cache_name(name: str) -> bool:
    return ("cache" in name or "past" in name) and name != "use_cache"


def _writes_cache(caches: tuple[int, ...], args: tuple, kwargs: dict[str, Any]) -> bool:
    """A kv cache among the arguments (a recompute would update it a second time)."""
    given = [args[i] for i in caches if i < len(args)]
    given += [v for name, v in kwargs.items() if _is_cache_name(name)]
    return any(v is not None and not isinstance(v, bool) for v in given)
