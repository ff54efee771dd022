"""Packed bytes decoded straight to a float tensor holding 0 or `scale` (no bool tensor between).

``F.dropout`` multiplies by a noise tensor of 0 or 1 / (1 - p); this rebuilds exactly that tensor
from a mask's packed bytes with one table lookup per byte (a byte of a 1-bit mask selects 8
values), instead of unpacking to bool, casting and scaling (three passes over the activation).
While compiling, the lookup is written as pointwise ops instead (see `_traced_rows`).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .layout import last_dim, per_byte
from .tracing import tracing


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
    if tracing():
        rows = _traced_rows(packed, bits, scale)
    else:
        rows = _table(bits, scale, packed.device).index_select(
            0, packed.reshape(-1).int()
        )  # (bytes, 8 // bits)
    cols = last_dim(shape)
    rows = rows.view(*packed.shape[:-1], packed.shape[-1] * per_byte(bits))  # not -1: may be empty
    if tracing() or rows.shape[-1] != cols:  # drop the row padding (no size guard)
        rows = rows[..., :cols]
    return rows.reshape(shape)


def constant(value: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A 0-dim constant. While compiling it is built on ``aten.empty``, which AOTAutograd's CSE never
    merges: a constant merged across two checkpointed layers would be saved (MUST_SAVE) for backward."""
    if tracing():
        return torch.empty((), dtype=dtype, device=device).fill_(value)
    return torch.full((), value, dtype=dtype, device=device)


@lru_cache(maxsize=16)
def _fields(bits: int, device: torch.device) -> torch.Tensor:
    """(256, 8 // bits) bool: row b says which elements packed in byte b are set."""
    shifts = torch.arange(per_byte(bits), device=device) * bits
    return ((torch.arange(256, device=device)[:, None] >> shifts) & 1).bool()


def _table(bits: int, scale: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(256, 8 // bits): row b holds the values (0 or `scale`) of the elements in byte b."""
    # Built from the scale tensor itself (no float() of it): the exact value.
    return torch.where(
        _fields(bits, device), scale.to(device), torch.zeros((), dtype=scale.dtype, device=device)
    )


def _traced_rows(packed: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    """The table lookup as pointwise ops (broadcast shift, and, where): inductor fuses them into the
    kernel that multiplies by the result, and AOTAutograd's partitioner recomputes them in backward
    from the saved bytes instead of saving the float tensor (it does not recompute an index_select).
    Same values: 0 or `scale` exactly."""
    shifts = torch.arange(per_byte(bits), device=packed.device, dtype=torch.uint8) * bits
    fields = (packed.reshape(-1, 1) >> shifts) & 1
    return torch.where(fields != 0, scale.to(packed.device), constant(0.0, scale.dtype, packed.device))
