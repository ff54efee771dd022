"""`pack_saved_bools`: every bool tensor autograd saves for backward is kept packed.

Its two hook functions, `pack_saved` and `unpack_saved`, are public: other saved-tensor hooks
(`SavedTensorCensus`) call them to pack the same tensors the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._prims_common import is_non_overlapping_and_dense_or_false

from .layout import check_bits
from .packed_bool import PackedBool


class SavedBool:
    """A packed saved tensor plus the strides to restore it with (`packed` is a PackedBool)."""

    __slots__ = ("packed", "stride")

    def __init__(self, mask: torch.Tensor, bits: int) -> None:
        self.packed = PackedBool(mask, bits=bits)
        self.stride = mask.stride()

    def restore(self) -> torch.Tensor:
        plain = self.packed.unpack()
        if plain.stride() == self.stride:
            return plain
        return torch.empty_strided(plain.shape, self.stride, dtype=torch.bool, device=plain.device).copy_(
            plain
        )


class pack_saved_bools(torch.autograd.graph.saved_tensors_hooks):  # noqa: N801 (a context manager)
    """Context manager: autograd keeps every bool tensor it saves at `bits` bits per element.

    Other tensors (float activations, integer indices) pass through untouched, as do bool
    tensors that are not dense (expanded views) or not plain tensors.

    Example:
        >>> x = torch.randn(64, 64, requires_grad=True)
        >>> with pack_saved_bools():
        ...     y = x.masked_fill(x > 0, 0.0).sum()   # the (x > 0) mask is saved at 1 bit
        >>> y.backward()

    NOTE: saved-tensor hooks nest and the innermost wins. Inside `torch.utils.checkpoint`
    (use_reentrant=False) checkpoint's own hooks apply, so the region saves nothing to pack;
    put `pack_saved_bools` inside the checkpointed function to pack during recomputation.
    """

    def __init__(self, bits: int = 1) -> None:
        check_bits(bits)
        super().__init__(lambda t: pack_saved(t, bits), unpack_saved)


def pack_saved(t: torch.Tensor, bits: int) -> torch.Tensor | SavedBool:
    """The pack hook: a dense plain bool tensor as a `SavedBool` at `bits`, anything else as it is."""
    if (
        type(t) is not torch.Tensor
        or t.dtype != torch.bool
        or t.layout != torch.strided
        or t.numel() == 0
        or not is_non_overlapping_and_dense_or_false(t)
    ):
        return t
    return SavedBool(t, bits)


def unpack_saved(saved: Any) -> torch.Tensor:
    """The unpack hook: inverse of `pack_saved` (the bool tensor with its original strides)."""
    return saved.restore() if isinstance(saved, SavedBool) else saved
