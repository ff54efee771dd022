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

from .errors import PackedBoolValueError

WIDTHS = (1, 2, 4, 8)
UNPACK_MODES = ("lazy", "cached")


def check_bits(bits: int) -> int:
    if bits not in WIDTHS:
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


def field_mask(bits: int) -> int:
    """The byte with the lowest bit of every field set: 0xFF, 0x55, 0x11, 0x01."""
    return sum(1 << (i * bits) for i in range(per_byte(bits)))
