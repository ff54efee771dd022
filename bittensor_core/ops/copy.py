"""clone / detach / alias / to(device) / copy_ on the packed storage."""

from __future__ import annotations

import torch

from .. import kernels
from ..dispatch import implements
from ..packed_bool import PackedBool

aten = torch.ops.aten


def _like(pb: PackedBool, packed: torch.Tensor) -> PackedBool:
    return PackedBool.from_packed(packed, pb.shape, bits=pb.bits, unpack=pb.unpack_mode)


@implements(aten.clone.default)
def clone(func, args, kwargs):  # noqa: ANN001, ANN201
    return _like(args[0], args[0].packed.clone())


@implements(aten.detach.default, aten.alias.default)
def alias(func, args, kwargs):  # noqa: ANN001, ANN201
    return _like(args[0], args[0].packed)


@implements(aten._to_copy.default)
def to_copy(func, args, kwargs):  # noqa: ANN001, ANN201
    pb: PackedBool = args[0]
    if kwargs.get("dtype") not in (None, torch.bool) or kwargs.get("layout") not in (None, torch.strided):
        return NotImplemented
    device = kwargs.get("device") or pb.device
    packed = pb.packed.to(device, non_blocking=kwargs.get("non_blocking", False), copy=True)
    return _like(pb, packed)


@implements(aten.copy_.default)
def copy_(func, args, kwargs):  # noqa: ANN001, ANN201
    dst, src = args[:2]
    if not isinstance(dst, PackedBool):
        return NotImplemented
    if isinstance(src, PackedBool) and src.shape == dst.shape and src.bits == dst.bits:
        dst.packed.copy_(src.packed)
    else:
        plain = src.unpack() if isinstance(src, PackedBool) else src
        if not isinstance(plain, torch.Tensor):
            return NotImplemented
        dst.packed.copy_(kernels.pack(plain.to(torch.bool).expand(dst.shape).to(dst.device), dst.bits))
    dst.release()
    return dst
