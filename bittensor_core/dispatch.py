"""The dispatch table: aten ops PackedBool handles on packed bytes, and the fallback for the rest.

Handlers register with `@implements(op, ...)` (torchao's pattern). A handler receives
``(func, args, kwargs)`` and returns its result, or `NotImplemented` when this call is outside
what it can do on packed bytes (a dim that touches the packed last dim, mixed widths, ...);
the call then takes the fallback: unpack every PackedBool, run the op on plain bool tensors,
write back any PackedBool the op mutated, and return plain results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

Handler = Callable[[torch._ops.OpOverload, tuple, dict], Any]
HANDLERS: dict[torch._ops.OpOverload, Handler] = {}


def implements(*ops: torch._ops.OpOverload) -> Callable[[Handler], Handler]:
    """Register a handler for one or more aten overloads."""

    def register(handler: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = handler
        return handler

    return register


def dispatch(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    handler = HANDLERS.get(func)
    if handler is not None:
        out = handler(func, args, kwargs)
        if out is not NotImplemented:
            return out
    return fallback(func, args, kwargs)


def _mutated_args(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> list[Any]:
    """The argument values the op writes to (self of in-place ops, out= tensors)."""
    mutated = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            mutated.append(args[i] if i < len(args) else kwargs.get(arg.name))
    return mutated


def fallback(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    """Unpack -> run -> plain result; PackedBools the op mutates are repacked in place."""
    from .packed_bool import PackedBool

    # A view op's output aliases its input: never hand out the cached unpacked tensor there.
    fresh = func.is_view
    unpacked: dict[int, tuple[PackedBool, torch.Tensor]] = {}

    def unwrap(x: Any) -> Any:
        if not isinstance(x, PackedBool):
            return x
        plain = x.unpack(fresh=fresh)
        unpacked[id(plain)] = (x, plain)
        return plain

    plain_args, plain_kwargs = tree_map(unwrap, (args, kwargs))
    out = func(*plain_args, **plain_kwargs)
    written = {
        id(plain): packed
        for value in _mutated_args(func, plain_args, plain_kwargs)
        if isinstance(value, torch.Tensor) and id(value) in unpacked
        for packed, plain in [unpacked[id(value)]]
    }
    for key, packed in written.items():
        packed._store(unpacked[key][1])
    return tree_map(lambda x: written.get(id(x), x), out)
