"""clone / detach / alias / to(device) / copy_ on the packed storage."""

from __future__ import annotations

import torch

from .. import kernels
from ..packed_bool import PackedBool

aten = torch.ops.aten


# Memory formats the storage can follow: others reorder the packed last dim.
_FORMATS = (None, torch.preserve_format, torch.contiguous_format)


@PackedBool.implements(aten.clone.default)
def clone(func, args, kwargs):
    memory_format = kwargs.get("memory_format")
    if memory_format not in _FORMATS:
        return NotImplemented
    return args[0]._like(args[0].packed.clone(memory_format=memory_format or torch.preserve_format))


@PackedBool.implements(aten.detach.default, aten.alias.default)
def alias(func, args, kwargs):
    return args[0]._alias(args[0].packed, args[0].shape)


@PackedBool.implements(aten._to_copy.default)
def to_copy(func, args, kwargs):
    pb: PackedBool = args[0]
    memory_format = kwargs.get("memory_format")
    if (
        kwargs.get("dtype") not in (None, torch.bool)
        or kwargs.get("layout") not in (None, torch.strided)
        or memory_format not in _FORMATS
    ):
        return NotImplemented
    device = kwargs.get("device") or pb.device
    packed = pb.packed.to(
        device,
        non_blocking=kwargs.get("non_blocking", False),
        copy=True,
        memory_format=memory_format or torch.preserve_format,
    )
    return pb._like(packed)


@PackedBool.implements(aten.copy_.default)
def copy_(func, args, kwargs):
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
    dst._wrote()
    return dst
