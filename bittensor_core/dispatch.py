"""The dispatch table: aten ops PackedBool handles on packed bytes, and the fallback for the rest.

Handlers register with `@PackedBool.implements(op, ...)` into a table kept on the tensor class
(torchao's pattern); this module takes the class as an argument and never imports it. A handler receives
``(func, args, kwargs)`` and returns its result, or `NotImplemented` when this call is outside
what it can do on packed bytes (a dim that touches the packed last dim, mixed widths, ...);
the call then takes the fallback: unpack every PackedBool, run the op on plain bool tensors,
write back every PackedBool the op mutated, and return plain results.

NOTE: aliasing follows the op's schema, as in torch. A view op (``Tensor(a)`` return) that the
packed bytes cannot express returns a *fallback view*: a PackedBool that re-derives itself from
its parent when the parent changes and writes back into it. A non-view op never returns memory
shared with a PackedBool's cache. An in-place op that would change a PackedBool's shape raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten

from .errors import PackedBoolError, PackedBoolFallbackWarning, PackedBoolValueError, UnpackFallbackError

Handler = Callable[[torch._ops.OpOverload, tuple, dict], Any]
FALLBACK_ALERTS = (None, "warn", "raise")


aten = torch.ops.aten
# Schema says new memory, kernels return views (kron's out= writes through _unsafe_view).
_UNSAFE_VIEWS = {aten._unsafe_view.default, aten.unsafe_split.Tensor, aten.unsafe_split_with_sizes.default}


# Ops that address the tensor's storage, which a PackedBool has only as its own elements.
_STORAGE_OPS = {
    aten.as_strided.default,
    aten.as_strided_.default,
    aten.as_strided_copy.default,
    aten.as_strided_scatter.default,
}


def _is_view(func: torch._ops.OpOverload) -> bool:
    return func.is_view or func in _UNSAFE_VIEWS


@cache
def _writes(func: torch._ops.OpOverload) -> tuple[tuple[int, str], ...]:
    """(position, name) of every argument the op writes to (self of in-place ops, out=)."""
    return tuple(
        (i, arg.name)
        for i, arg in enumerate(func._schema.arguments)
        if arg.alias_info is not None and arg.alias_info.is_write
    )


def _written(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> list[Any]:
    """The values the op writes to, lists of tensors (out= of split_copy ...) flattened."""
    values = [args[i] if i < len(args) else kwargs.get(name) for i, name in _writes(func)]
    return tree_leaves(values)


def dispatch(cls: type, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    """Run `func` for the tensor class `cls`: its handler from ``cls.handlers``, else the fallback."""
    handler = cls.handlers.get(func)
    if handler is not None and _handler_may_run(cls, func, args, kwargs):
        out = handler(func, args, kwargs)
        if out is not NotImplemented:
            return out
    _alert(cls.on_fallback, func)
    return fallback(cls, func, args, kwargs)


def _alert(mode: str | None, func: torch._ops.OpOverload) -> None:
    """`PackedBool.on_fallback`: say (or refuse) that `func` unpacks instead of running on bytes."""
    if mode is None:
        return
    text = (
        f"{func} has no packed-bytes handler for this call: it unpacks the PackedBool, runs on the "
        "bool tensor and repacks what it writes (PackedBool.on_fallback is set)."
    )
    if mode == "warn":
        warnings.warn(text, PackedBoolFallbackWarning, stacklevel=4)
    elif mode == "raise":
        raise UnpackFallbackError(
            text + " Unpack explicitly (pb.unpack()) or set PackedBool.on_fallback = None."
        )
    else:
        raise PackedBoolValueError(
            f"PackedBool.on_fallback={mode!r} is not supported; use one of {FALLBACK_ALERTS}."
        )


def _handler_may_run(cls: type, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> bool:
    """Handlers work on `self`'s packed bytes. A fallback view's bytes are a derived copy:
    writing them, or viewing them, would not reach its parent, so such calls fall back."""
    if not args or not isinstance(args[0], (cls, list, tuple)):
        return False  # e.g. plain[PackedBool]: the indexed tensor is not packed
    if not (_is_view(func) or _writes(func)):
        return True
    return not any(isinstance(x, cls) and x._view_of is not None for x in tree_leaves((args, kwargs)))


def fallback(cls: type, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    """Unpack -> run -> plain result; PackedBools the op mutates are written back in place."""
    if func in _STORAGE_OPS and isinstance(args[0], cls) and _window(args[0]):
        raise PackedBoolError(
            f"{func} addresses the storage under a view, and a view of a PackedBool has no bool "
            "storage to address. Call it on a copy: pb.clone() (or on pb.unpack())."
        )
    # What the op writes or views must not be the shared cached tensor.
    fresh = _is_view(func) or bool(_writes(func))
    targets = {id(v) for v in _written(func, args, kwargs)}
    unpacked: dict[int, tuple[Any, torch.Tensor]] = {}

    def unwrap(x: Any) -> Any:
        if not isinstance(x, cls):
            return x
        plain = x._plain(fresh=fresh)
        if id(x) in targets and not plain.untyped_storage().resizable():
            plain = plain.clone()  # numpy-backed: let resize_ / out= resizing reach our check
        unpacked[id(plain)] = (x, plain)
        return plain

    plain_args, plain_kwargs = tree_map(unwrap, (args, kwargs))
    out = func(*plain_args, **plain_kwargs)
    written = [unpacked[id(v)] for v in _written(func, plain_args, plain_kwargs) if id(v) in unpacked]
    for pb, plain in written:
        if plain.shape != pb.shape:
            raise PackedBoolError(
                f"{func} changes the shape of a PackedBool in place ({tuple(pb.shape)} -> "
                f"{tuple(plain.shape)}), but its packed shape is fixed. Use the out-of-place op "
                "(pb = pb.squeeze() rather than pb.squeeze_()) or an out= of the result's shape."
            )
    for pb, plain in written:
        pb._store(plain)
    if _is_view(func) and isinstance(args[0], cls):
        return _fallback_views(cls, func, args[0], plain_args, plain_kwargs, out)
    back = {id(plain): pb for pb, plain in written}
    caches = [p for pb, p in unpacked.values() if pb._cache is not None and pb._cache[1] is p]
    return tree_map(lambda x: back[id(x)] if id(x) in back else _not_aliasing(x, caches), out)


def _window(pb: Any) -> bool:
    """Is `pb` a view onto a larger mask (its elements are not the whole storage)?"""
    packed = pb._packed
    return (
        pb._view_of is not None
        or packed.storage_offset() != 0
        or (packed.untyped_storage().nbytes() != packed.numel())
    )


def _not_aliasing(x: Any, caches: list[torch.Tensor]) -> Any:
    """`x`, or a copy of it if it shares memory with a cached unpacked tensor (the op's schema
    says it returns new memory, so the cache must not leak out through it)."""
    if not (caches and isinstance(x, torch.Tensor) and x.layout == torch.strided):
        return x
    return x.clone() if any(torch._C._is_alias_of(x, c) for c in caches) else x


def _fallback_views(
    cls: type, func: torch._ops.OpOverload, parent: Any, args: tuple, kwargs: dict, out: Any
) -> Any:
    """Wrap each output of a view op on `parent` as a fallback view that replays the op."""
    leaves, spec = tree_flatten(out)

    def view(i: int, plain: torch.Tensor) -> torch.Tensor:
        if plain.dtype != torch.bool:
            raise PackedBoolError(
                f"{func} would view a PackedBool's memory as {plain.dtype}, but that memory holds "
                "packed bits, not bools. Unpack first: pb.unpack() gives a plain bool tensor."
            )
        return cls._fallback_view(parent, plain, lambda base: tree_leaves(func(base, *args[1:], **kwargs))[i])

    return tree_unflatten([view(i, x) for i, x in enumerate(leaves)], spec)
