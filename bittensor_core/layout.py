"""The storage layout, in one place.

NOTE: a mask of logical shape (*lead, C) is stored as uint8 of shape (*lead, row_bytes(C, bits)).
Element j of a row sits in byte j // per_byte at bit offset (j % per_byte) * bits, LSB first;
only the lowest bit of each `bits`-wide field is ever set, and the padding bits at the end of a
row are always zero. A 0-dim mask is stored as one row of length 1. With bits=1 the layout equals
``np.packbits(mask, axis=-1, bitorder="little")``.
"""

from __future__ import annotations

import math

import torch
from torch._prims_common import make_contiguous_strides_for

from .errors import PackedBoolValueError

__all__ = ["UNPACK_MODES", "WIDTHS", "check_bits", "check_unpack_mode", "packed_shape", "row_bytes"]

WIDTHS = (1, 2, 4, 8)
UNPACK_MODES = ("lazy", "cached")


def check_bits(bits: int) -> int:
    # `type() is int`: 2.0 == 2 and True == 1 would pass a plain `in` test.
    if type(bits) is not int or bits not in WIDTHS:
        raise PackedBoolValueError(f"bits={bits!r} is not supported; use one of {WIDTHS}.")
    return bits


def check_unpack_mode(mode: str) -> str:
    if mode not in UNPACK_MODES:
        raise PackedBoolValueError(f"unpack={mode!r} is not supported; use one of {UNPACK_MODES}.")
    return mode


def per_byte(bits: int) -> int:
    return 8 // bits


def row_bytes(last_dim: int, bits: int) -> int:
    """Bytes one row of `last_dim` elements takes: ceil(last_dim * bits / 8)."""
    return -(-last_dim * bits // 8)


def last_dim(shape: torch.Size | tuple[int, ...]) -> int:
    """Row length of a logical shape (a 0-dim mask is one row of one element)."""
    return shape[-1] if len(shape) else 1


def num_rows(shape: torch.Size | tuple[int, ...]) -> int:
    """Number of rows: the product of the leading dims (1 for 0-dim and 1-dim shapes)."""
    return math.prod(shape[:-1])


def packed_shape(shape: torch.Size | tuple[int, ...], bits: int) -> tuple[int, ...]:
    lead = tuple(shape[:-1]) if len(shape) else ()
    return (*lead, row_bytes(last_dim(shape), bits))


def first_fields(count: int, bits: int) -> int:
    """The byte with the lowest bit of its first `count` fields set (all fields: 0xFF, 0x55, 0x11, 0x01)."""
    return sum(1 << (i * bits) for i in range(count))


def stray_bits(packed: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int) -> bool:
    """Is any bit set that the layout keeps zero (unused field bits, row padding)?"""
    if packed.numel() == 0:
        return False
    if (packed & (~first_fields(per_byte(bits), bits) & 0xFF)).any():
        return True
    used = last_dim(shape) - (packed.shape[-1] - 1) * per_byte(bits)  # fields in the last byte
    return bool((packed[..., -1] >> (used * bits)).any())


def logical_strides(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a mask of `shape` stored in `packed`: a storage row is `shape[-1]`
    elements, so a leading-dim byte stride `s` is `s / row_bytes * shape[-1]` elements."""
    contiguous = make_contiguous_strides_for(shape)
    if len(shape) == 0 or shape[-1] == 0 or packed.dim() != len(shape):
        return tuple(contiguous)
    cols, nbytes = shape[-1], packed.shape[-1]
    lead = [s * cols // nbytes if s % nbytes == 0 else s * cols for s in packed.stride()[:-1]]
    return (*lead, 1)


def with_strides(plain: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """`plain`'s values laid out with `stride` (stride-0 dims become expanded dims)."""
    if plain.stride() == tuple(stride) or plain.numel() == 0:
        return plain
    expanded = [d for d, s in enumerate(stride) if s == 0 and plain.shape[d] > 1]
    core = plain
    for d in expanded:
        core = core.narrow(d, 0, 1)
    out = torch.empty_strided(core.shape, stride, dtype=plain.dtype, device=plain.device)
    return out.copy_(core).expand(plain.shape)
