"""The layers' compile seam: the one place packedbool calls ``torch.utils.checkpoint``, asks whether it
is inside one, and keeps what the attention cores' checkpoints hold (their attention mask, packed once).
Layers code that differs while torch.compile traces asks `bittensor_core.tracing.tracing()`.

NOTE (CSE): under torch.compile, AOTAutograd CSEs the joint graph before partitioning and merges
identical ops across layers and across forward and backward: every layer unpacks the same mask bytes
with the same ops and builds the same constants (0, -inf, the dropout scale), and a mask type's backward
reads its saved bytes with the very ops its forward read them. A node of one checkpointed region used by
a later one, or of forward used by backward, is then saved for backward: the unpacked mask or its float
bias instead of the bytes, a 0-dim constant instead of nothing. ``aten.empty`` is never merged, so while
tracing such values are built on it: `region_local` copies the mask bytes into a fresh buffer per region
(and for `MaskFunction`'s backward), and
`bittensor_core.tracing.constant` builds constants on it (see docs/compile.md).

NOTE (respect_saved_tensors_hooks): torch 2.14 added ``checkpoint(..., respect_saved_tensors_hooks=)``.
Left unset while a saved-tensor hook is active (``save_on_cpu``, ``pack_saved_bools``, a census), a
selective checkpoint warns (FutureWarning) and the default is announced to flip. packedbool passes
``False`` wherever the installed torch has the argument: the legacy behaviour, which keeps today's
memory and today's bit-identical results, said explicitly so it cannot change under us.

NOTE (layouts): a saved-tensor hook may hand an input back with other strides than it had:
``save_on_cpu(pin_memory=True)`` copies each into ``torch.empty(t.size())``, contiguous, so a
transposed query comes back contiguous, and a matmul on it may round differently (another BLAS call).
The recompute therefore first restores every tensor input to the strides it had in forward (a no-op
unless a hook changed them), so it runs the very ops on the very layouts of the first forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts  # noqa: F401 (re-exported)
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from bittensor_core import PackedBool, kernels
from bittensor_core.tracing import tracing

from .float_masks import BinaryFloatMask

__all__ = [
    "checkpoint",
    "checkpoint_core",
    "checkpoint_mask",
    "checkpointed_mask",
    "inside_checkpoint",
    "shared_attention_mask",
]

# {"respect_saved_tensors_hooks": False} where the installed torch has the argument (2.14+), else {}.
EXPLICIT_HOOKS: dict[str, bool] = (
    {"respect_saved_tensors_hooks": False}
    if "respect_saved_tensors_hooks" in inspect.signature(_torch_checkpoint).parameters
    else {}
)


def checkpoint(fn: Callable[..., Any], *args: Any, preserve_rng_state: bool = True, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under a non-reentrant activation checkpoint: nothing `fn` saves is kept,
    backward recomputes it (replaying the RNG state when `preserve_rng_state`) from `args` laid out as
    they were in forward (NOTE (layouts))."""
    if not tracing():  # traced code has no saved-tensor hooks to change layouts
        strides = [a.stride() if _strided(a) else None for a in args]
        fn = partial(_on_layouts, fn, strides)
    return _torch_checkpoint(
        fn, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **EXPLICIT_HOOKS, **kwargs
    )


def _strided(t: Any) -> bool:
    return type(t) in (torch.Tensor, torch.nn.Parameter) and t.layout == torch.strided


def _on_layouts(fn: Callable[..., Any], strides: list, *args: Any, **kwargs: Any) -> Any:
    return fn(*(_on_strides(a, stride) for a, stride in zip(args, strides, strict=True)), **kwargs)


def _on_strides(t: Any, stride: tuple[int, ...] | None) -> Any:
    """`t` laid out with `stride` again (a copy only where a saved-tensor hook changed its layout)."""
    if stride is None or t.stride() == stride:
        return t
    return torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device).copy_(t)


def inside_checkpoint() -> bool:
    """In the forward of a non-reentrant checkpoint (its saved-tensor hooks are on top), or in any
    recompute (it runs during backward). Never while compiling: AOTAutograd decides what to save there."""
    if tracing():
        return False
    if torch._C._current_graph_task_id() != -1:
        return True
    hooks = torch._C._autograd._top_saved_tensors_default_hooks(True)
    return hooks is not None and "_checkpoint_hook" in getattr(hooks[0], "__qualname__", "")


def checkpoint_core(
    core: Callable[..., torch.Tensor],
    *args: torch.Tensor,
    preserve_rng_state: bool,
    mode: TorchFunctionMode | None = None,
) -> torch.Tensor:
    """``core(*args)`` (inside `mode` when given) under a non-reentrant checkpoint: backward recomputes
    it from `args`.

    Inside an enclosing activation checkpoint (gradient checkpointing of the layer) the core runs
    directly: that checkpoint already drops what the core saves, and its recompute runs the core
    again; a checkpoint of our own would run the core a third time. The same ops run either way,
    so results are identical. `mode` goes inside the checkpoint, whose recompute (in backward) needs
    it again; while tracing around it: dynamo refuses a mode entered inside a checkpoint, and needs
    none there (the mode acts while tracing, and AOTAutograd recomputes from the traced graph).
    """
    if mode is not None and tracing():
        with mode:
            return checkpoint_core(core, *args, preserve_rng_state=preserve_rng_state)
    if mode is not None:
        core = partial(_in_mode, mode, core)
    if inside_checkpoint():
        return core(*args)
    if mode is None and not preserve_rng_state and not tracing():
        return _Recomputed.apply(core, *args)
    return checkpoint(core, *args, preserve_rng_state=preserve_rng_state)


class _Recomputed(torch.autograd.Function):
    """NOTE (lean recompute): eager mode's checkpoint of an attention core whose random bits are given.

    torch's non-reentrant checkpoint sets up saved-tensor hooks, frame bookkeeping and a recompute
    closure on every call: at small shapes that costs more than the core itself. This Function saves the
    core's tensor inputs as that checkpoint does (``save_for_backward``: saved-tensor hooks, offloading
    and censuses see the same bytes) and nothing the core computes; backward restores the inputs'
    layouts (NOTE (layouts)) and runs the core again under forward's autocast state, with no saved-tensor
    hook of the user's applying to it (as in the checkpoint's recompute), and differentiates it: the
    checkpoint's recompute, op for op, so the same gradients. Only for cores that draw nothing (their
    dropout bits are an input) and need no mode; the rest, and everything traced, goes through `checkpoint`.
    """

    @staticmethod
    def forward(ctx: Any, core: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        tensors = [isinstance(a, torch.Tensor) for a in args]
        ctx.core, ctx.tensors = core, tensors
        ctx.others = [None if t else a for a, t in zip(args, tensors, strict=True)]
        ctx.strides = [a.stride() for a, t in zip(args, tensors, strict=True) if t]
        device = args[0].device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(*(a for a, t in zip(args, tensors, strict=True) if t))
        return core(*args)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        needs, higher = ctx.needs_input_grad[1:], torch.is_grad_enabled()  # grad mode on: create_graph
        saved, strides, args = iter(ctx.saved_tensors), iter(ctx.strides), []
        for tensor, other, need in zip(ctx.tensors, ctx.others, needs, strict=True):
            if not tensor:
                args.append(other)
                continue
            t = _on_strides(next(saved), next(strides))
            # create_graph: the grads must reach the saved tensor; else a fresh leaf, where the graph stops
            args.append(t if higher else t.detach().requires_grad_(need))
        device, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled), _untouched():
            out = ctx.core(*args)
        if out._base is None and not higher:  # its values are never read, only its grad_fn: freed now,
            out.untyped_storage().resize_(0)  # so backward holds no more than the checkpoint's does
        inputs = [a for a, need in zip(args, needs, strict=True) if need]
        grads = iter(torch.autograd.grad(out, inputs, grad, allow_unused=True, create_graph=higher))
        return (None, *(next(grads) if need else None for need in needs))


def _untouched() -> torch.autograd.graph.saved_tensors_hooks:
    """Identity saved-tensor hooks, on top of any of the user's: what the recompute saves stays as it is."""
    return torch.autograd.graph.saved_tensors_hooks(_same, _same)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _in_mode(mode: TorchFunctionMode, core: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    with mode:
        return core(*args)


def shared_attention_mask(mask: torch.Tensor | None, pack: Callable[[torch.Tensor], PackedBool]) -> Any:
    """The bool attention mask all layers share, as a model's mask function returns it: packed once by
    `pack` in eager mode; while tracing the plain bool mask (dynamo cannot trace a PackedBool built
    inside the graph), which `checkpoint_mask` packs for each core's checkpoint instead."""
    return mask if mask is None or tracing() else pack(mask)


def checkpoint_mask(
    attn_mask: torch.Tensor | None,
) -> tuple[tuple | None, torch.Tensor | BinaryFloatMask | None]:
    """(spec, mask) for the attention core's checkpoint: a PackedBool's bytes and (shape, bits);
    while tracing, a plain bool mask packed at 1 bit (the compiled step then keeps these bytes, as
    eager keeps the PackedBool's); a {0, min} float mask as a `BinaryFloatMask` (stock SDPA keeps no
    mask: the checkpoint must not keep 32 bits per score for it); anything else as is, with spec None.
    `checkpointed_mask` undoes it inside the core."""
    if isinstance(attn_mask, PackedBool):
        return (attn_mask.shape, attn_mask.bits), attn_mask.packed
    if attn_mask is not None and attn_mask.dtype == torch.bool and tracing():
        return (attn_mask.shape, 1), kernels.pack(attn_mask, 1)
    return None, BinaryFloatMask.of(attn_mask) or attn_mask


def checkpointed_mask(mask: torch.Tensor | BinaryFloatMask | None, spec: tuple | None) -> torch.Tensor | None:
    """The mask `checkpoint_mask` gave as (`spec`, `mask`), as the caller passed it (bool or float)."""
    if isinstance(mask, BinaryFloatMask):
        return mask.restore()
    return mask if spec is None else kernels.unpack(region_local(mask), *spec)


def region_local(t: torch.Tensor) -> torch.Tensor:
    """`t`, copied into a fresh buffer through ``aten.empty`` while tracing (as is in eager mode), so
    each region (or backward) unpacks its own copy of the shared mask bytes (NOTE (CSE))."""
    if not tracing():
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)
