"""The mask-type plug-in interface and the generic autograd Function the mask types run on.

A `MaskType` says three things about a binary mask:

- `sample`: how the mask is drawn (stochastic types) — from the `Draw` it is handed, so the
  generic Function can draw the very same mask again in backward (``storage="seeded"``);
- `apply`: what forward computes from the mask and the inputs;
- `grad`: what backward computes from the mask, the output gradient and whatever `save` kept.

`apply_mask` runs a mask type through `MaskFunction`, which packs the mask once into a
`bittensor_core.Mask` and keeps its bytes for backward as they are (width and unpack mode chosen by
the caller) or, for ``storage="seeded"``, only the sampler's key. Both go through ``ctx.save_for_backward``, so saved-tensor hooks (checkpointing,
`save_on_cpu` offloading, `SavedTensorCensus`) see and manage them. The Function holds no tensor
subclass, so torch.compile traces it into the model's graph (docs/compile.md). See
docs/mask-types.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from bittensor_core import Mask
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from bittensor_core.tracing import tracing

from .checkpointing import region_local
from .kept_draw import kept_draw
from .options import MaskStorage
from .samplers import get_sampler

Shape = torch.Size | tuple[int, ...]
# draw(shape, keep) -> bool mask of `shape` (a bool tensor or a `Mask`), True with probability `keep`.
Draw = Callable[[Shape, float], torch.Tensor]


class MaskType(ABC):
    """Base class of a mask type. Subclass it and override `apply` and `grad` (and `sample`,
    `save` where needed); instances hold the per-call settings (p, scale, ...).

    Inputs are ``(x, *others)``: every tensor the op reads; `grad` returns one gradient (or None)
    per input. Rules that keep the Function exact:

    - `sample` must get all its randomness from `draw` and must not read input values (in
      ``storage="seeded"`` backward it is called again with the same shape and no inputs);
    - `apply` must not modify its inputs; `save` returns only tensors the backward really needs
      (default: none), since they are kept alive until backward.

    NOTE: a mask type that is never sampled (a given head mask, a router's top-k choice) just
    leaves `sample` alone and is called with ``apply_mask(..., mask=m)``. Set ``inplace = True``
    on a type whose `apply` writes its result into `x` and returns it (like nn.Dropout(inplace=True)).
    """

    inplace: bool = False

    def sample(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        """Draw the mask for input `x` (only its shape/dtype/device may be used)."""
        raise PackedBoolTypeError(
            f"{type(self).__name__} has no sample(); pass the mask explicitly: apply_mask(..., mask=m)."
        )

    @abstractmethod
    def apply(self, mask: Mask, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        """Forward: the output from the mask and the inputs.

        `mask` (here and in `grad`) is a `bittensor_core.Mask` of the mask's shape: call
        ``mask.unpack()`` for the bool tensor, ``mask.scaled(s)`` for ``mask * s`` decoded straight
        from the bytes (`BernoulliMask` does), or read ``mask.bytes`` (the flattened mask, packed).
        ``mask.shape``, ``mask.bits``, ``mask.numel()`` as usual.
        """

    @abstractmethod
    def grad(
        self, mask: Mask, grad_out: torch.Tensor, *saved: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        """Backward: one gradient per input ``(x, *others)`` from the mask and `save`'s tensors."""

    def save(self, x: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Tensors besides the mask that `grad` needs (saved with save_for_backward)."""
        return ()


def apply_mask(
    mask_type: MaskType,
    x: torch.Tensor,
    *others: torch.Tensor,
    mask: torch.Tensor | Mask | None = None,
    storage: MaskStorage | None = None,
) -> torch.Tensor:
    """Run `mask_type` on ``(x, *others)`` and keep its mask packed for backward.

    Args:
        mask_type: the mask type, with its settings.
        x, others: the op's inputs (any shapes the mask type accepts).
        mask: a given bool mask (bool tensor, PackedBool or `Mask`); if None, `mask_type.sample` draws it.
        storage: bits / unpack mode / packed-or-seeded / sampler (default: 1 bit, lazy, packed, exact).

    Returns:
        whatever `mask_type.apply` returns (one tensor).

    Example:
        >>> out = apply_mask(BernoulliMask(p=0.1, shape_of=lambda x: x.shape), torch.randn(4, 8))
    """
    storage = storage or MaskStorage()
    given, shape, plain = None, None, None
    if mask is not None:
        if not isinstance(mask, Mask) and getattr(mask, "dtype", None) != torch.bool:
            raise PackedBoolTypeError(
                f"mask must be a bool tensor, PackedBool or Mask, got {getattr(mask, 'dtype', type(mask))}; "
                "pass mask.bool()."
            )
        if storage.seeded:
            raise PackedBoolValueError(
                "storage='seeded' needs a sampled mask; a given mask can only be packed."
            )
        given = storage.mask(mask)  # plain bytes: the Function never sees a tensor subclass
        # and the bool mask where it is at hand: forward reads it, only backward reads the bytes
        given, shape, plain = given.bytes, given.shape, given.unpacked
    elif storage.seeded and storage.sampler == "exact" and tracing():
        raise PackedBoolValueError(
            "storage='seeded' with sampler='exact' cannot run under torch.compile (a compiled graph cannot "
            "snapshot and replay torch's generator); use storage='packed' (1 bit per element) or "
            "sampler='fast' (seeded by an 8-byte key)."
        )
    elif tracing() and not storage.seeded:  # drawn here, so kept (see `kept_draw`)
        sampler = get_sampler(storage.sampler)
        shape = mask_type.sample(
            x, lambda size, keep: torch.empty(size, dtype=torch.bool, device="meta")
        ).shape
        given = kept_draw(
            lambda like: storage.mask(mask_type.sample(like, _draw_for(sampler, like))).bytes, x
        )
    return MaskFunction.apply(mask_type, storage, given, shape, plain, x, *others)


class MaskFunction(torch.autograd.Function):
    """The generic Function: draw or take the mask, apply it, save it packed (or seeded)."""

    @staticmethod
    def forward(
        ctx: Any,
        mask_type: MaskType,
        storage: MaskStorage,
        given: torch.Tensor | None,
        given_shape: torch.Size | None,
        given_plain: torch.Tensor | None,
        x: torch.Tensor,
        *others: torch.Tensor,
    ) -> torch.Tensor:
        key = None
        if given is None:
            sampler = get_sampler(storage.sampler)
            key = sampler.key(x.device, replay=storage.seeded)
            mask = storage.mask(mask_type.sample(x, _bind(sampler.draw, key, x)))
        else:
            mask = Mask(given, given_shape, storage.bits, storage.unpack, given_plain)
        out = mask_type.apply(mask, x, *others)
        if mask_type.inplace:
            ctx.mark_dirty(x)
        kept = key if storage.seeded else mask.saved()
        ctx.save_for_backward(kept, *mask_type.save(x, *others))
        ctx.mask_type, ctx.storage, ctx.mask_shape = mask_type, storage, mask.shape
        ctx.x_meta = (x.shape, x.stride(), x.dtype, x.device)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        kept, *saved = ctx.saved_tensors
        mask_type, storage = ctx.mask_type, ctx.storage
        if storage.seeded:
            shape, stride, dtype, device = ctx.x_meta
            like = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
            sampler = get_sampler(storage.sampler)
            drawn = mask_type.sample(like, _bind(sampler.redraw, kept, like, device))
            mask = storage.mask(drawn)
        else:
            # read as forward read them: region_local keeps the two reads apart (NOTE (CSE) in layers.checkpointing)
            mask = Mask(region_local(kept), ctx.mask_shape, storage.bits, storage.unpack)
        grads = mask_type.grad(mask, grad_out, *saved)
        return (None, None, None, None, None, *grads)


def _draw_for(sampler: Any, like: torch.Tensor) -> Draw:
    return _bind(sampler.draw, sampler.key(like.device, replay=False), like)


def _bind(
    fn: Callable, key: torch.Tensor | None, like: torch.Tensor, device: torch.device | None = None
) -> Draw:
    device = device or like.device
    return lambda shape, keep: fn(key, shape, keep, like, device)
