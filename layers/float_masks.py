"""`BinaryFloatMask`: a float attention mask that is a binary mask over a per-key bias, kept as bits and a row.

Many models hand their attention a float mask that is a boolean one in disguise: 0 where a query
attends, ``finfo(dtype).min`` where it does not (BERT-family extended masks, T5's cross-attention
bias, MPNet's mask), or a per-key bias with that mask on top (Falcon's ALiBi, the same for every
query). A checkpoint that must keep such a mask for its recompute keeps 32 bits per score where 1
bit per score and one row of floats say the same. `BinaryFloatMask.of` recognises one (the
rebuilt tensor equals the given one bit for bit, or it is refused) and keeps it so; `restore`
rebuilds it, so the recompute adds the very same values. Any other float (a relative-position
bias varying along both axes) is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bittensor_core import kernels

_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True)
class BinaryFloatMask:
    """``where(keep, row, min)``: `keep` packed at 1 bit (shape (..., Sq, Sk)), `row` (..., 1, Sk) floats."""

    packed: torch.Tensor
    shape: torch.Size
    row: torch.Tensor

    @staticmethod
    def of(t: Any) -> BinaryFloatMask | None:
        """`t` so kept if it is a contiguous float (..., Sq, Sk) equal, bit for bit, to ``where(keep, row, min)``
        for a bool `keep` and a row broadcast over the queries, and that takes less memory; else None."""
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.requires_grad or t.dim() < 2:
            return None
        if not t.is_contiguous() or t.shape[-2] < 2 or torch.compiler.is_compiling():
            return None
        low = torch.finfo(t.dtype).min
        keep = t != low
        row = t.masked_fill(~keep, low).amax(dim=-2, keepdim=True)  # each key's value where it is attended
        packed = BinaryFloatMask(kernels.pack(keep, 1), t.shape, row)
        if (
            packed.packed.numel() + row.nbytes >= t.untyped_storage().nbytes()
        ):  # a broadcast view of a small mask
            return None
        as_int = _SAME_WIDTH_INT[t.element_size()]
        return packed if torch.equal(packed.restore().view(as_int), t.view(as_int)) else None

    def restore(self) -> torch.Tensor:
        """The float mask: `row` where the bit is set, the dtype's min elsewhere (contiguous, as it was)."""
        keep = kernels.unpack(self.packed, self.shape, 1)
        return torch.where(keep, self.row, torch.finfo(self.row.dtype).min)


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
