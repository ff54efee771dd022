"""Packed bytes decoded straight to a float tensor holding 0 or `scale` (no bool tensor between).

``F.dropout`` multiplies by a noise tensor of 0 or 1 / (1 - p); this rebuilds exactly that tensor
from a mask's packed bytes, one byte's values at a time (`kernels.scaled_fields`: a table lookup in
eager mode, pointwise ops while compiling), instead of unpacking to bool, casting and scaling (three
passes over the activation).
"""

from __future__ import annotations

import torch

from . import kernels
from .layout import last_dim, per_byte
from .tracing import cut_to


def unpack_scaled(
    packed: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int, scale: torch.Tensor
) -> torch.Tensor:
    """The tensor ``mask * scale`` of the mask stored in `packed`: 0 where False, `scale` where True.

    Args:
        packed: uint8 of shape ``layout.packed_shape(shape, bits)`` (e.g. ``PackedBool.packed``).
        shape: the mask's logical shape; bits: its width (1, 2, 4, 8).
        scale: 0-dim float tensor; its dtype is the result's dtype, its value is copied exactly.

    Returns:
        tensor of `shape` and scale's dtype, on packed's device.

    Example:
        >>> pb = PackedBool(torch.tensor([[True, False, True]]))
        >>> unpack_scaled(pb.packed, pb.shape, 1, torch.tensor(2.0))
        tensor([[2., 0., 2.]])
    """
    rows = kernels.scaled_fields(packed, bits, scale)  # (bytes, 8 // bits)
    rows = rows.view(*packed.shape[:-1], packed.shape[-1] * per_byte(bits))  # not -1: may be empty
    return cut_to(rows, last_dim(shape)).reshape(shape)  # drop the row padding
