"""& | ^ ~ == != on packed bytes: the layout keeps padding and unused field bits at zero."""

from __future__ import annotations

import torch

from ..packed_bool import PackedBool

aten = torch.ops.aten

_BYTE_OP = {
    aten.bitwise_and.Tensor: torch.bitwise_and,
    aten.logical_and.default: torch.bitwise_and,
    aten.bitwise_or.Tensor: torch.bitwise_or,
    aten.logical_or.default: torch.bitwise_or,
    aten.bitwise_xor.Tensor: torch.bitwise_xor,
    aten.logical_xor.default: torch.bitwise_xor,
    aten.ne.Tensor: torch.bitwise_xor,
    aten.eq.Tensor: torch.bitwise_xor,  # then inverted
}
_IN_PLACE = {
    aten.bitwise_and_.Tensor: torch.Tensor.bitwise_and_,
    aten.logical_and_.default: torch.Tensor.bitwise_and_,
    aten.bitwise_or_.Tensor: torch.Tensor.bitwise_or_,
    aten.logical_or_.default: torch.Tensor.bitwise_or_,
    aten.bitwise_xor_.Tensor: torch.Tensor.bitwise_xor_,
    aten.logical_xor_.default: torch.Tensor.bitwise_xor_,
}


def _same_layout(a: object, b: object) -> bool:
    """Both packed with equal shape, width and device: bytes line up one to one."""
    return (
        isinstance(a, PackedBool)
        and isinstance(b, PackedBool)
        and a.shape == b.shape
        and a.bits == b.bits
        and a.device == b.device
    )


@PackedBool.implements(*_BYTE_OP)
def binary(func, args, kwargs):
    a, b = args[:2]
    if not _same_layout(a, b):
        return NotImplemented
    out = _BYTE_OP[func](a.packed, b.packed)
    if func is aten.eq.Tensor:
        out ^= a._row_ones()
    return a._like(out)


@PackedBool.implements(*_IN_PLACE)
def binary_in_place(func, args, kwargs):
    a, b = args[:2]
    if not _same_layout(a, b):
        return NotImplemented
    _IN_PLACE[func](a.packed, b.packed)
    a._wrote()
    return a


@PackedBool.implements(aten.bitwise_not.default, aten.logical_not.default)
def invert(func, args, kwargs):
    (a,) = args
    return a._like(a.packed ^ a._row_ones())


@PackedBool.implements(aten.bitwise_not_.default, aten.logical_not_.default)
def invert_in_place(func, args, kwargs):
    (a,) = args
    a.packed.bitwise_xor_(a._row_ones())
    a._wrote()
    return a
