"""Shape ops that leave the last (packed) dim alone run on the uint8 storage as they are.

The storage has the mask's leading dims, so select / slice / index / view / cat / stack ... on
those dims are the same op on the bytes. Any call that would touch the last dim returns
NotImplemented and takes the unpacking fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch._prims_common import infer_size
from torch.utils._pytree import tree_map_only

from ..packed_bool import PackedBool

aten = torch.ops.aten


def _wrap(like: PackedBool, out: object) -> object:
    """Wrap every storage tensor in `out` as a PackedBool with `like`'s row length and width."""
    cols = like.shape[-1]

    def wrap(t: torch.Tensor) -> PackedBool:  # views share `like`'s write count; copies may too
        return like._alias(t, (*t.shape[:-1], cols))

    return tree_map_only(torch.Tensor, wrap, out)


def _leading(dim: int, ndim: int) -> bool:
    """Is `dim` (possibly negative, for a tensor of `ndim` dims) one of the leading dims?"""
    return ndim >= 1 and -ndim <= dim < ndim and dim % ndim != ndim - 1


def _on_storage(func, pb: PackedBool, args: tuple, kwargs: dict) -> object:
    return _wrap(pb, func(pb.packed, *args[1:], **kwargs))


def _dim_arg(args: tuple, kwargs: dict, position: int, default: int = 0) -> int:
    return args[position] if len(args) > position else kwargs.get("dim", default)


@PackedBool.implements(
    aten.select.int,
    aten.slice.Tensor,
    aten.narrow.default,
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.unbind.int,
)
def along_dim(func, args, kwargs):
    """Ops whose dim is the argument after `self` (select/slice default it to 0)."""
    pb = args[0]
    position = 2 if func in (aten.split.Tensor, aten.split_with_sizes.default) else 1
    if not _leading(_dim_arg(args, kwargs, position), pb.dim()):
        return NotImplemented
    return _on_storage(func, pb, args, kwargs)


@PackedBool.implements(aten.transpose.int)
def transpose(func, args, kwargs):
    pb, d0, d1 = args
    if not (_leading(d0, pb.dim()) and _leading(d1, pb.dim())):
        return NotImplemented
    return _on_storage(func, pb, args, kwargs)


@PackedBool.implements(aten.permute.default)
def permute(func, args, kwargs):
    pb, dims = args
    if pb.dim() == 0 or dims[-1] % pb.dim() != pb.dim() - 1:
        return NotImplemented
    return _on_storage(func, pb, args, kwargs)


@PackedBool.implements(aten.unsqueeze.default)
def unsqueeze(func, args, kwargs):
    pb, dim = args
    if not _leading(dim, pb.dim() + 1):
        return NotImplemented
    return _on_storage(func, pb, args, kwargs)


@PackedBool.implements(aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims)
def squeeze(func, args, kwargs):
    pb = args[0]
    ndim = pb.dim()
    dims = range(ndim) if len(args) == 1 else ([args[1]] if isinstance(args[1], int) else args[1])
    dims = [d % ndim for d in dims if ndim and pb.shape[d] == 1]
    if ndim == 0 or ndim - 1 in dims:
        return NotImplemented
    return _wrap(pb, pb.packed.squeeze(dims) if dims else pb.packed)


def _keeps_last(pb: PackedBool, size: Sequence[int]) -> list[int] | None:
    """The resolved new size when it keeps the row length as the last dim, else None."""
    if pb.dim() == 0 or len(size) == 0:
        return None
    new = list(infer_size(size, pb.numel())) if pb.numel() else list(size)
    return new if new[-1] == pb.shape[-1] and -1 not in new else None


@PackedBool.implements(aten.view.default, aten._unsafe_view.default)
def view(func, args, kwargs):
    pb, size = args
    new = _keeps_last(pb, size)
    if new is None:
        return NotImplemented
    # view raises where torch would (strides that do not fit); _unsafe_view may copy.
    reshape = torch.Tensor.view if func is aten.view.default else torch.Tensor.reshape
    return _wrap(pb, reshape(pb.packed, *new[:-1], pb.packed.shape[-1]))


@PackedBool.implements(aten.expand.default)
def expand(func, args, kwargs):
    pb, size = args[:2]
    if pb.dim() == 0 or len(size) == 0 or size[-1] not in (-1, pb.shape[-1]):
        return NotImplemented
    return _wrap(pb, pb.packed.expand(*size[:-1], pb.packed.shape[-1]))


@PackedBool.implements(aten.index.Tensor)
def index(func, args, kwargs):
    pb, indices = args
    plain = [i.unpack() if isinstance(i, PackedBool) else i for i in indices]
    covered = sum(1 if i is None or i.dtype != torch.bool else i.dim() for i in plain)
    if covered >= pb.dim():
        return NotImplemented
    return _wrap(pb, func(pb.packed, plain))


def _stackable(tensors: Sequence[object]) -> bool:
    first = tensors[0] if tensors else None
    return (
        isinstance(first, PackedBool)
        and first.dim() > 0
        and all(
            isinstance(t, PackedBool)
            and t.bits == first.bits
            and t.dim() == first.dim()
            and t.shape[-1] == first.shape[-1]
            for t in tensors
        )
    )


@PackedBool.implements(aten.cat.default)
def cat(func, args, kwargs):
    tensors, dim = args[0], _dim_arg(args, kwargs, 1)
    if not _stackable(tensors) or not _leading(dim, tensors[0].dim()):
        return NotImplemented
    return _wrap(tensors[0], func([t.packed for t in tensors], dim))


@PackedBool.implements(aten.stack.default)
def stack(func, args, kwargs):
    tensors, dim = args[0], _dim_arg(args, kwargs, 1)
    if not _stackable(tensors) or not _leading(dim, tensors[0].dim() + 1):
        return NotImplemented
    return _wrap(tensors[0], func([t.packed for t in tensors], dim))
