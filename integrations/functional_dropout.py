"""Functional dropout calls (``F.dropout``, ``torch.dropout`` and their in-place forms) through packed dropout.

Many models call dropout as a function rather than through an ``nn.Dropout`` module (BART, OPT,
Whisper and T5-style code: ``nn.functional.dropout(h, p=self.dropout, training=self.training)``).
`DropoutRoute` is a ``TorchFunctionMode`` that answers those calls with a function of
``(input, p, training, inplace)``; `ModuleRoute` enters one with `layers.dropout_with`
(`layers.packed_dropout` taking its options whole: bit-identical to F.dropout, mask kept at 1 bit)
from forward pre-hooks on the modules that make such calls and leaves it from forward hooks, so it
is active exactly while they run. Other dropouts (``dropout2d``, ``alpha_dropout``,
``feature_dropout``) are not intercepted: they draw different masks.

Example:
    >>> route = ModuleRoute(model, {model: True}, MaskStorage())   # model(**batch) now packs them
    >>> route.remove()
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from bittensor_core.tracing import tracing
from layers import MaskStorage, dropout_with
from layers.checkpointing import inside_checkpoint

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


def _dropout_args(
    func: Callable, args: tuple, kwargs: dict[str, Any]
) -> tuple[torch.Tensor, float, bool, bool]:
    """(input, p, training, inplace) of a call to one of `FUNCTIONS`, with F.dropout's defaults."""
    names = ("input", "p", "training", "inplace") if func is F.dropout else ("input", "p", "train")
    bound = dict(zip(names, args, strict=False)) | kwargs
    training = bound.get("training", bound.get("train", True))
    return (
        bound["input"],
        float(bound.get("p", 0.5)),
        bool(training),
        bool(bound.get("inplace", FUNCTIONS[func])),
    )


class ModuleRoute:
    """While one of `modules` runs forward, every functional dropout call becomes a
    `layers.dropout_with` call if the innermost of them running packs (its value in `modules`),
    else runs as F.dropout would.

    Entered from a forward pre-hook on each module and left from a forward hook; not at all while the
    module is in eval mode or grad is disabled (`MaskStorage.runs_stock`): those calls are the stock
    ones, at no cost per op, and are not counted. Inside the
    forward of an activation checkpoint (gradient checkpointing) calls stay stock: the checkpoint
    keeps nothing of them, and its recompute in backward may run without these hooks
    (transformers >= 5.2x checkpoints ``forward``, not ``__call__``), so both draw alike.

    Args:
        model: the patched model; its forward starts a new count of `calls`.
        modules: {module: packs?}: those whose own code may call F.dropout, and those where the
            include / exclude filters' choice changes.
        options: how the masks are kept (bits, unpack, storage, sampler).

    Attributes:
        calls: functional dropout calls packed since the model's latest forward began
            (recomputations in backward included; observed, not counted while torch.compile traces).

    Example:
        >>> route = ModuleRoute(model, {model: True}, MaskStorage())   # model(**batch) now packs them
        >>> route.remove()
    """

    def __init__(self, model: nn.Module, modules: dict[nn.Module, bool], options: MaskStorage) -> None:
        self.options, self.calls = options, 0
        self._scopes: list[bool] = []  # innermost last: does the code running now pack?
        self._mode: DropoutRoute | None = None  # entered at depth `_mode_depth` of `_scopes`
        self._mode_depth = 0
        self.handles = [model.register_forward_pre_hook(self._count_anew)]
        for module, packs in modules.items():
            self.handles += [
                module.register_forward_pre_hook(partial(self._enter, packs)),
                module.register_forward_hook(self._leave, always_call=True),
            ]

    def remove(self) -> None:
        """Stop routing: remove every hook."""
        for handle in self.handles:
            handle.remove()

    def _drop(self, x: torch.Tensor, p: float, training: bool, inplace: bool) -> torch.Tensor:
        # Left alone by the filters, or inside an activation checkpoint's forward (it keeps nothing
        # of it, and its recompute in backward runs without our hooks: both must draw alike). Our
        # modes are off while one answers, so this is the stock call.
        if not self._scopes[-1] or inside_checkpoint():
            return F.dropout(x, p, training, inplace)
        self._count(anew=False)
        return dropout_with(self.options, x, p, training, inplace)

    def _count_anew(self, module: nn.Module, args: Any) -> None:
        self._count(anew=True)

    def _count(self, *, anew: bool) -> None:
        """Start `calls` anew or add one, in eager code only: the count is observed, and torch.compile's
        tracing is not a call that ran (nor should a traced graph carry a Python counter)."""
        if not tracing():
            self.calls = 0 if anew else self.calls + 1

    def _enter(self, packs: bool, module: nn.Module, args: Any) -> None:
        self._scopes.append(packs)
        # One mode, entered by the outermost module that may pack: nested ones share it. In eval mode or
        # under no_grad none is entered: the mode would see every torch call, to change none of them.
        if self._mode is None and not self.options.runs_stock(module.training):
            self._mode, self._mode_depth = DropoutRoute(self._drop), len(self._scopes)
            self._mode.__enter__()

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._mode is not None and len(self._scopes) == self._mode_depth:
            self._mode.__exit__(None, None, None)
            self._mode = None
        self._scopes.pop()
