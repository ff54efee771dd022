"""sum / count_nonzero / any / all over the whole mask, by popcount on packed bytes."""

from __future__ import annotations

import torch

from .. import kernels
from ..packed_bool import PackedBool

aten = torch.ops.aten


def _whole_tensor(args: tuple, kwargs: dict) -> bool:
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    return dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0)


@PackedBool.implements(aten.sum.default, aten.sum.dim_IntList, aten.count_nonzero.default)
def count(func, args, kwargs):
    pb: PackedBool = args[0]
    if func is not aten.sum.default and not _whole_tensor(args, kwargs):
        return NotImplemented
    if kwargs.get("keepdim") or (len(args) > 2 and args[2]):
        return NotImplemented
    total = kernels.popcount(pb.packed)
    dtype = kwargs.get("dtype")
    return total if dtype is None else total.to(dtype)


@PackedBool.implements(aten.any.default)
def any_set(func, args, kwargs):
    return args[0].packed.any().to(torch.bool)


@PackedBool.implements(aten.all.default)
def all_set(func, args, kwargs):
    pb: PackedBool = args[0]
    return (pb.packed == pb._row_ones()).all()
