"""Pointwise activations whose output is recomputed in backward instead of kept.

In a transformer MLP, ``down(act(up(x)))``, autograd keeps two (B, S, 4H) float tensors per layer:
the activation's input ``h = up(x)`` (GELU's and SiLU's backward need it) and its output
``act(h)`` (the down projection's weight gradient needs it). The output is a function of the
input, which is kept anyway. `RecomputedActivation` wraps the activation module and, while a
`recompute_scope` is active, records ``(act, h)`` for the tensor it returns; the scope's
saved-tensor hooks keep that recipe in place of the output wherever an op saves it, and backward
recomputes ``act(h)`` with the very same op (same input, same autocast state): gradients are
bit-identical and one (B, S, 4H) float per MLP is not kept. While compiling (saved-tensor hooks do
not reach into a compiled graph) the activation runs as a one-op non-reentrant checkpoint instead:
AOTAutograd's partitioner must recompute a checkpointed node, so the compiled graph keeps the
input, not the output, too.

Only activations whose autograd node keeps its input, not its output, qualify (checked on the node
each call: GELU, SiLU, Mish, Hardswish, LeakyReLU); others (ReLU keeps its output, tanh-GELU written
in Python keeps intermediates) run unchanged. Inside an activation checkpoint or a recompute nothing
is recorded (the checkpoint already drops the output). A recipe is refused when the output was
modified in place before an op saved it, and backward raises, as autograd does, when the input was
modified in place after.

Example:
    >>> mlp.act = RecomputedActivation(mlp.act)
    >>> with recompute_scope():
    ...     loss = model(x).sum()       # the MLP keeps h, not act(h)
    >>> loss.backward()                 # act(h) recomputed: same gradients as without the scope
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from bittensor_core.tracing import tracing

from .checkpointing import checkpoint, inside_checkpoint

__all__ = ["RecomputedActivation", "recomputable", "recompute_scope"]

# Autograd nodes that keep the activation's input (`self`) and nothing derived from its output.
_KEEPS_INPUT_ONLY = frozenset(
    {"GeluBackward0", "SiluBackward0", "MishBackward0", "HardswishBackward0", "LeakyReluBackward0"}
)
_active = threading.local()  # the innermost active scope of this thread (saved-tensor hooks are per thread)


@dataclass(frozen=True)
class _Recipe:
    """How to rebuild the tensor an op saved: ``fn(source)`` (under `autocast`) viewed as `size`,
    `stride`, `offset`; `version` is `source`'s version when saved."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    source: torch.Tensor
    version: int
    autocast: tuple[str, bool, torch.dtype]
    size: torch.Size
    stride: tuple[int, ...]
    offset: int

    def rebuild(self) -> torch.Tensor:
        if self.source._version != self.version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: the input of the recomputed activation {self.fn} (version {self.version} when "
                f"saved, now {self.source._version}). Unpatch the activation (patch_model(..., "
                "activations=False)) or do not modify it in place."
            )
        device, enabled, dtype = self.autocast
        with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            out = self.fn(self.source)
        return out.as_strided(self.size, self.stride, self.offset)


@dataclass
class _Output:
    """An activation output, held weakly, with what rebuilds it."""

    ref: weakref.ref
    fn: Callable[[torch.Tensor], torch.Tensor]
    source: torch.Tensor
    version: int
    autocast: tuple[str, bool, torch.dtype]


class _Outer:
    """What the enclosing saved-tensor hooks made of a tensor this scope did not replace."""

    def __init__(self, packed: object) -> None:
        self.packed = packed


class _Scope(torch.autograd.graph.saved_tensors_hooks):
    def __init__(self) -> None:
        self.outputs: dict[int, _Output] = {}  # storage data_ptr -> the live output stored there
        outer = torch._C._autograd._top_saved_tensors_default_hooks(True)
        self.outer_pack, self.outer_unpack = outer if outer is not None else (None, None)
        super().__init__(self.pack, self.unpack)

    def record(
        self, fn: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor, out: torch.Tensor
    ) -> None:
        key = out.untyped_storage().data_ptr()
        device = out.device.type
        autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))

        def forget(ref: weakref.ref) -> None:
            if key in self.outputs and self.outputs[key].ref is ref:
                del self.outputs[key]

        self.outputs[key] = _Output(weakref.ref(out, forget), fn, source, out._version, autocast)

    def pack(self, t: torch.Tensor) -> object:
        plain = type(t) in (torch.Tensor, nn.Parameter) and t.layout == torch.strided  # not a PackedBool
        entry = self.outputs.get(t.untyped_storage().data_ptr()) if plain and self.outputs else None
        out = entry.ref() if entry is not None else None
        # The same live storage at the version the activation left it: the saved tensor is (a view of) its output.
        if out is not None and t._version == entry.version and t.dtype == out.dtype:
            return _Recipe(
                entry.fn,
                entry.source,
                entry.source._version,
                entry.autocast,
                t.size(),
                t.stride(),
                t.storage_offset() - out.storage_offset(),
            )
        return t if self.outer_pack is None else _Outer(self.outer_pack(t))

    def unpack(self, packed: object) -> torch.Tensor:
        if isinstance(packed, _Recipe):
            return packed.rebuild()
        return self.outer_unpack(packed.packed) if isinstance(packed, _Outer) else packed

    def __enter__(self) -> _Scope:
        super().__enter__()
        self.parent, _active.scope = getattr(_active, "scope", None), self
        return self

    def __exit__(self, *exc: object) -> None:
        _active.scope = self.parent
        self.outputs.clear()
        super().__exit__(*exc)


def recomputable(act: nn.Module) -> bool:
    """Whether `act`'s autograd node keeps only its input (probed on a 2-element float tensor)."""
    try:
        node = act(torch.zeros(2, requires_grad=True)).grad_fn
    except Exception:  # not a unary pointwise module
        return False
    return node is not None and node.name() in _KEEPS_INPUT_ONLY


def recompute_scope() -> AbstractContextManager:
    """A context manager: while active, outputs of `RecomputedActivation` modules are kept as
    recipes, not tensors.

    Composes with enclosing saved-tensor hooks (e.g. ``pack_saved_bools``): every other saved
    tensor goes to them. A no-op while compiling (`RecomputedActivation` checkpoints itself there), inside
    an activation checkpoint (it already drops the output) and with grad disabled (nothing is saved).
    """
    if tracing() or not torch.is_grad_enabled() or inside_checkpoint():
        return nullcontext()
    return _Scope()


class RecomputedActivation(nn.Module):
    """`act`, with its output recomputed in backward instead of kept (inside a `recompute_scope`).

    Args:
        act: a pointwise activation module (``nn.GELU``, ``nn.SiLU``, transformers' ``GELUActivation``).

    Shape: any; the output is ``act(x)``, bit for bit.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Nothing kept for backward (no_grad, generate): the activation alone, fetched without
        # nn.Module.__getattr__ (a Python call per use).
        if not torch.is_grad_enabled():
            return self._modules["act"](x)
        if tracing():
            # A checkpointed node is one the partitioner must recompute: the compiled graph keeps x, not act(x).
            return checkpoint(self.act, x)
        out = self.act(x)
        scope = getattr(_active, "scope", None)
        node = out.grad_fn
        if scope is None or node is None or node.name() not in _KEEPS_INPUT_ONLY or inside_checkpoint():
            return out
        scope.record(self.act, x, out)
        return out
