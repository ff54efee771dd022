"""`BinaryFloatMask`: a mask handed to a checkpointed attention, kept as bits (and a row of floats) instead.

Many models hand their attention a float mask that is a boolean one in disguise: 0 where a query
attends, ``finfo(dtype).min`` where it does not (BERT-family extended masks, T5's cross-attention
bias, MPNet's mask), or a per-key bias with that mask on top (Falcon's ALiBi, the same for every
query). A checkpoint that must keep such a mask for its recompute keeps 32 bits per score where 1
bit per score and one row of floats say the same. `BinaryFloatMask.of` recognises one (the
rebuilt tensor equals the given one bit for bit, or it is refused) and keeps it so; `restore`
rebuilds it, so the recompute adds the very same values. A float taking two values only (Longformer's
{0, -10000} mask) is kept as bits and the two values, and a bool tensor (a padding mask) as its bits.
Any other float (a relative-position bias varying along both axes) is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bittensor_core import kernels
from bittensor_core.tracing import tracing

__all__ = ["BinaryFloatMask", "pack_float_masks", "restore_float_masks"]

_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True)
class BinaryFloatMask:
    """``where(keep, high, low)``: `keep` packed at 1 bit; `high` a scalar or a (..., 1, Sk) row, `low` a scalar
    (both 0-dim or row tensors of the mask's dtype). A bool tensor is kept as its bits alone (`high` None)."""

    packed: torch.Tensor
    shape: torch.Size
    high: torch.Tensor | None
    low: torch.Tensor | None

    @staticmethod
    def of(t: Any) -> BinaryFloatMask | None:
        """`t` so kept if it is a bool tensor, or a float tensor equal, bit for bit, to
        ``where(keep, high, low)`` with two values (a {0, min} mask) or a per-key row over ``finfo.min``
        (ALiBi under a mask), and that takes less memory so; else None (keep `t` as it is)."""
        if not isinstance(t, torch.Tensor) or type(t) is not torch.Tensor or t.requires_grad or t.dim() < 2:
            return None
        if tracing() or t.device.type == "meta":
            return None
        if t.dtype == torch.bool:
            return BinaryFloatMask(kernels.pack(t, 1), t.shape, None, None)._if_smaller(t)
        if not t.is_floating_point() or t.numel() == 0:
            return None
        low = t.amin()
        keep = kernels.pack(t != low, 1)
        kept = BinaryFloatMask(keep, t.shape, t.amax(), low)._if_smaller(t)
        if (
            kept is not None
            and not kept._restores(t)
            and t.shape[-2] > 1
            and bool(low == torch.finfo(t.dtype).min)
        ):
            kept = BinaryFloatMask(keep, t.shape, t.amax(dim=-2, keepdim=True), low)._if_smaller(
                t
            )  # a row of keys
        return kept if kept is not None and kept._restores(t) else None

    def restore(self) -> torch.Tensor:
        """The tensor's values as given, contiguous (a view of a bigger mask, Longformer's (B, S) slice of
        its (B, 1, S, S) mask, comes back as a (B, S) tensor of its own: masks feed element-wise ops)."""
        keep = kernels.unpack(self.packed, self.shape, 1)
        return keep if self.high is None else torch.where(keep, self.high, self.low)

    def _restores(self, t: torch.Tensor) -> bool:
        as_int = _SAME_WIDTH_INT[t.element_size()]
        return torch.equal(self.restore().view(as_int), t.view(as_int))

    def _if_smaller(self, t: torch.Tensor) -> BinaryFloatMask | None:
        """self if it takes less memory than `t`'s storage (not a broadcast view of a small mask)."""
        extra = 0 if self.high is None else self.high.nbytes + self.low.nbytes
        return self if self.packed.numel() + extra < t.untyped_storage().nbytes() else None


def pack_float_masks(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """`args` and `kwargs` with every such float mask among them replaced by its `BinaryFloatMask`."""
    return tuple(BinaryFloatMask.of(a) or a for a in args), {
        k: BinaryFloatMask.of(v) or v for k, v in kwargs.items()
    }


def restore_float_masks(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """The inverse of `pack_float_masks`."""

    def restore(value: Any) -> Any:
        return value.restore() if isinstance(value, BinaryFloatMask) else value

    return tuple(restore(a) for a in args), {k: restore(v) for k, v in kwargs.items()}
