"""`DropoutTape`: dropout masks drawn in a checkpointed forward, kept packed, replayed from their bits in its recompute.

A checkpoint that recomputes code applying dropout must apply the very same masks again. Stock
code draws them from the RNG, so the recompute needs the generator state restored and hopes
nothing else draws in between (torch.compile's recomputation does not honour that). Inside
``tape.scope()`` every dropout call goes through `DropoutTape.dropout`: the first time the scope
runs (the checkpointed forward) each call draws its mask with F.dropout's own generator calls and
keeps it at `bits` bits per element; every later run (the recompute in backward) takes the masks
back in the same order instead of drawing. The drop is ``x * noise``, at::dropout's own op on CPU,
the noise decoded from the bits: the output equals F.dropout's bit for bit, both times.

`PackedDropout` modules defer to the active tape (see `active_tape`); F.dropout calls reach it
through a ``TorchFunctionMode`` set up by whoever opens the scope. With ``storage="seeded"`` the tape
keeps no bits: each run draws again, and the caller's checkpoint must restore the generator state.

Example:
    >>> tape = DropoutTape(MaskStorage())
    >>> def core(x):
    ...     with tape.scope():
    ...         return tape.dropout(x.softmax(-1), 0.1) @ x
    >>> out = checkpoint(core, x)   # backward recomputes core with the same mask, from its bits
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from bittensor_core.errors import PackedBoolValueError
from bittensor_core.tracing import tracing

from .attention import DropoutSpec
from .options import MaskStorage, check_floating, check_p

__all__ = ["DropoutTape"]

_ACTIVE: ContextVar[DropoutTape | None] = ContextVar("packedbool_dropout_tape", default=None)


def active_tape() -> DropoutTape | None:
    """The tape whose `DropoutTape.scope` is running, or None (always while torch.compile traces: no
    scope is opened there, and dynamo cannot read a ContextVar)."""
    if tracing():
        return None
    return _ACTIVE.get()


class DropoutTape:
    """The dropout masks of one checkpointed call, in the order they were drawn.

    Attributes:
        options: how the masks are kept and drawn (`MaskStorage`).
        masks: the packed masks drawn so far (None for a mask kept as no bits: p = 1, or seeded).
    """

    def __init__(self, options: MaskStorage) -> None:
        self.options = options
        self.masks: list[torch.Tensor | None] = []
        self._shapes: list[tuple[int, ...]] = []
        self._recorded = False  # a scope has finished: later scopes replay
        self._next = 0

    @contextmanager
    def scope(self) -> Iterator[DropoutTape]:
        """Run code whose dropout calls go through this tape: the first scope records, later ones replay."""
        self._next = 0
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)
            self._recorded = True

    def dropout(
        self, x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
    ) -> torch.Tensor:
        """``F.dropout(x, p, training, inplace)``'s result, its mask recorded (first scope) or replayed."""
        p = check_p(p)
        check_floating(x, "input")
        if not training or p == 0.0 or x.numel() == 0:
            return x  # F.dropout draws nothing here
        o = self.options
        spec = DropoutSpec(p, tuple(x.shape), o)
        if self._recorded:
            if self._next >= len(self.masks) or self._shapes[self._next] != spec.shape:
                drawn = f"{self._shapes[self._next]}" if self._next < len(self.masks) else "none"
                raise PackedBoolValueError(
                    f"the recompute applies dropout #{self._next + 1} to shape {spec.shape} but its forward drew"
                    f" {drawn} there: the checkpointed code must apply the same dropouts each time it runs."
                )
            keep = self.masks[self._next]
        else:
            self._shapes.append(spec.shape)
            keep = None if o.seeded or p == 1.0 else spec.draw_like(x)
            self.masks.append(keep)
        self._next += 1
        out = spec.dropout(keep)(x)
        return x.copy_(out) if inplace else out
