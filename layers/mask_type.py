"""The mask-type plug-in interface and the one autograd Function every packed layer runs on.

A `MaskType` says three things about a binary mask:

- `sample`: how the mask is drawn (stochastic types) — from the `Draw` it is handed, so the
  generic Function can draw the very same mask again in backward (``storage="seeded"``);
- `apply`: what forward computes from the mask and the inputs;
- `grad`: what backward computes from the mask, the output gradient and whatever `save` kept.

`apply_mask` runs a mask type through `MaskFunction`, which keeps the mask for backward as a
`PackedBool` (width and unpack mode chosen by the caller) or, for ``storage="seeded"``, only the
sampler's key. Both go through ``ctx.save_for_backward``, so saved-tensor hooks (checkpointing,
`save_on_cpu` offloading, `SavedTensorCensus`) see and manage them. See docs/mask-types.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from bittensor_core import PackedBool
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from bittensor_core.layout import last_dim, packed_shape

from .options import MaskStorage
from .samplers import get_sampler

Shape = torch.Size | tuple[int, ...]
# draw(shape, keep) -> bool mask of `shape` (plain or PackedBool), True with probability `keep`.
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
    def apply(self, mask: PackedBool, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        """Forward: the output from the mask and the inputs.

        `mask` (here and in `grad`) is a PackedBool of the mask's shape: use it in any torch op
        (it unpacks itself), call ``mask.unpack()`` once if it is used several times, or read
        ``mask.packed`` to work on the bytes (`layers.noise.packed_noise` does).
        """

    @abstractmethod
    def grad(
        self, mask: PackedBool, grad_out: torch.Tensor, *saved: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        """Backward: one gradient per input ``(x, *others)`` from the mask and `save`'s tensors."""

    def save(self, x: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Tensors besides the mask that `grad` needs (saved with save_for_backward)."""
        return ()


def apply_mask(
    mask_type: MaskType,
    x: torch.Tensor,
    *others: torch.Tensor,
    mask: torch.Tensor | None = None,
    storage: MaskStorage | None = None,
) -> torch.Tensor:
    """Run `mask_type` on ``(x, *others)`` and keep its mask packed for backward.

    Args:
        mask_type: the mask type, with its settings.
        x, others: the op's inputs (any shapes the mask type accepts).
        mask: a given bool mask (plain or PackedBool); if None, `mask_type.sample` draws it.
        storage: bits / unpack mode / packed-or-seeded / sampler (default: 1 bit, lazy, packed, exact).

    Returns:
        whatever `mask_type.apply` returns (one tensor).

    Example:
        >>> out = apply_mask(BernoulliMask(p=0.1, shape_of=lambda x: x.shape), torch.randn(4, 8))
    """
    storage = storage or MaskStorage()
    if mask is not None:
        if mask.dtype != torch.bool:
            raise PackedBoolTypeError(f"mask must be a bool tensor, got dtype={mask.dtype}; pass mask.bool().")
        if storage.storage == "seeded":
            raise PackedBoolValueError("storage='seeded' needs a sampled mask; a given mask can only be packed.")
    fn = _apply_eagerly if torch.compiler.is_compiling() else MaskFunction.apply
    return fn(mask_type, storage, mask, x, *others)


class MaskFunction(torch.autograd.Function):
    """The generic Function: draw or take the mask, apply it, save it packed (or seeded)."""

    @staticmethod
    def forward(ctx: Any, mask_type: MaskType, storage: MaskStorage, given: torch.Tensor | None,
                x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        key = None
        if given is None:
            sampler = get_sampler(storage.sampler)
            key = sampler.key(x.device, replay=storage.storage == "seeded")
            mask = mask_type.sample(x, _bind(sampler.draw, key, x))
        else:
            mask = given
        mask = _packed(mask, storage)
        out = mask_type.apply(mask, x, *others)
        if mask_type.inplace:
            ctx.mark_dirty(x)
        kept = key if storage.storage == "seeded" else _flat(mask)
        ctx.save_for_backward(kept, *mask_type.save(x, *others))
        ctx.mask_type, ctx.storage, ctx.mask_shape = mask_type, storage, mask.shape
        ctx.x_meta = (x.shape, x.stride(), x.dtype, x.device)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        kept, *saved = ctx.saved_tensors
        mask_type, storage = ctx.mask_type, ctx.storage
        if storage.storage == "seeded":
            shape, stride, dtype, device = ctx.x_meta
            like = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
            sampler = get_sampler(storage.sampler)
            mask = _packed(mask_type.sample(like, _bind(sampler.redraw, kept, like, device)), storage)
        else:
            mask = _unflat(kept, ctx.mask_shape)
        grads = mask_type.grad(mask, grad_out, *saved)
        return (None, None, None, *grads)


# Under torch.compile the Function runs eagerly (a graph break on each side): dynamo cannot trace
# the construction of tensor subclasses inside an autograd.Function, nor the fast sampler's numpy.
# (torch._disable_dynamo imports dynamo only when called: `import layers` stays light.)
@torch._disable_dynamo
def _apply_eagerly(*args: Any) -> torch.Tensor:
    return MaskFunction.apply(*args)


def _packed(mask: torch.Tensor, storage: MaskStorage) -> PackedBool:
    """The mask as a PackedBool of its own shape at the storage's width (shares bytes if it is one)."""
    if isinstance(mask, PackedBool):
        if mask.bits == storage.bits and mask.unpack_mode == storage.unpack:
            return mask
        if mask.bits == storage.bits:
            return PackedBool.from_packed(mask.packed, mask.shape, bits=mask.bits, unpack=storage.unpack)
    return PackedBool(mask, bits=storage.bits, unpack=storage.unpack)


def _aligned(shape: torch.Size, bits: int) -> bool:
    """Rows fill whole bytes, so the storage is also the packing of the flattened mask."""
    return last_dim(shape) * bits % 8 == 0


def _flat(mask: PackedBool) -> PackedBool:
    """What is saved: the mask as 1-D, ceil(n * bits / 8) bytes whatever its shape.

    Broadcast masks end in size-1 dims ((B, H, 1, 1) head gates, (B, 1, 1) DropPath); packed
    along their own last dim each element would take a whole byte. Aligned masks share bytes.
    """
    if _aligned(mask.shape, mask.bits):
        return PackedBool.from_packed(mask.packed.reshape(-1), (mask.numel(),), bits=mask.bits,
                                      unpack=mask.unpack_mode)
    return PackedBool(mask.unpack().reshape(-1), bits=mask.bits, unpack=mask.unpack_mode)


def _unflat(kept: PackedBool, shape: torch.Size) -> PackedBool:
    """Inverse of `_flat`."""
    if _aligned(shape, kept.bits):
        packed = kept.packed.view(packed_shape(shape, kept.bits))
        return PackedBool.from_packed(packed, shape, bits=kept.bits, unpack=kept.unpack_mode)
    return PackedBool(kept.unpack().view(shape), bits=kept.bits, unpack=kept.unpack_mode)


def _bind(fn: Callable, key: torch.Tensor | None, like: torch.Tensor, device: torch.device | None = None) -> Draw:
    device = device or like.device
    return lambda shape, keep: fn(key, shape, keep, like, device)
