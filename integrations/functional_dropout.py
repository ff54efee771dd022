"""Functional dropout calls (``F.dropout``, ``torch.dropout`` and their in-place forms) through packed dropout.

Many models call dropout as a function rather than through an ``nn.Dropout`` module (BART, OPT,
Whisper and T5-style code: ``nn.functional.dropout(h, p=self.dropout, training=self.training)``).
`DropoutRoute` is a ``TorchFunctionMode`` that answers those calls with a function of
``(input, p, training, inplace)``; `route_functional_dropout` enters one with
`layers.packed_dropout` (bit-identical to F.dropout, mask kept at 1 bit) from a forward pre-hook
on the model and leaves it from a forward hook, so it is active exactly while the model runs
forward. Other element-wise-incompatible dropouts (``dropout2d``, ``alpha_dropout``,
``feature_dropout``) are not intercepted: they draw different masks.

Example:
    >>> handles = route_functional_dropout(model, MaskStorage())   # model(**batch) now packs them
    >>> for h in handles: h.remove()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from layers import MaskStorage, packed_dropout

# (function, in place?) for every element-wise dropout entry point Python code calls.
FUNCTIONS = {F.dropout: False, torch.dropout: False, torch.dropout_: True}
Drop = Callable[[torch.Tensor, float, bool, bool], torch.Tensor]


class DropoutRoute(TorchFunctionMode):
    """While active, every F.dropout / torch.dropout / torch.dropout_ call returns
    ``drop(input, p, training, inplace)``; every other torch function runs unchanged.

    Example:
        >>> with DropoutRoute(lambda x, p, training, inplace: x):   # dropout off, say
        ...     y = F.dropout(x, 0.5)
    """

    def __init__(self, drop: Drop) -> None:
        super().__init__()
        self.drop = drop

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in FUNCTIONS:
            return func(*args, **kwargs)
        return self.drop(*_dropout_args(func, args, kwargs))


def _dropout_args(func: Callable, args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor, float, bool, bool]:
    """(input, p, training, inplace) of a call to one of `FUNCTIONS`, with F.dropout's defaults."""
    names = ("input", "p", "training", "inplace") if func is F.dropout else ("input", "p", "train")
    bound = dict(zip(names, args, strict=False)) | kwargs
    training = bound.get("training", bound.get("train", True))
    return bound["input"], float(bound.get("p", 0.5)), bool(training), bool(bound.get("inplace", FUNCTIONS[func]))


def route_functional_dropout(model: nn.Module, options: MaskStorage) -> list[RemovableHandle]:
    """Make every functional dropout call inside ``model(...)`` a `layers.packed_dropout` call.

    Args:
        model: the module whose forward (and everything it calls) is covered.
        options: how the masks are kept (bits, unpack, storage, sampler).

    Returns:
        The two hook handles; ``remove()`` both to stop routing.
    """
    active: list[DropoutRoute] = []

    def drop(x: torch.Tensor, p: float, training: bool, inplace: bool) -> torch.Tensor:
        return packed_dropout(x, p, training, inplace, bits=options.bits, unpack=options.unpack,
                              storage=options.storage, sampler=options.sampler)

    def enter(module: nn.Module, args: Any) -> None:
        active.append(DropoutRoute(drop))
        active[-1].__enter__()

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        active.pop().__exit__(None, None, None)

    return [model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True)]
