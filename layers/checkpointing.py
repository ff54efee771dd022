"""The one place packedbool calls ``torch.utils.checkpoint``, and asks whether it is inside one.

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
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts  # noqa: F401 (re-exported)
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

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
    if not torch.compiler.is_compiling():  # traced code has no saved-tensor hooks to change layouts
        strides = [a.stride() if _strided(a) else None for a in args]
        fn = partial(_on_layouts, fn, strides)
    return _torch_checkpoint(
        fn, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **EXPLICIT_HOOKS, **kwargs
    )


def _strided(t: Any) -> bool:
    return type(t) in (torch.Tensor, torch.nn.Parameter) and t.layout == torch.strided


def _on_layouts(fn: Callable[..., Any], strides: list, *args: Any, **kwargs: Any) -> Any:
    args = tuple(
        torch.empty_strided(a.shape, stride, dtype=a.dtype, device=a.device).copy_(a)
        if stride is not None and a.stride() != stride
        else a
        for a, stride in zip(args, strides, strict=True)
    )
    return fn(*args, **kwargs)


def inside_checkpoint() -> bool:
    """In the forward of a non-reentrant checkpoint (its saved-tensor hooks are on top), or in any
    recompute (it runs during backward). Never while compiling: AOTAutograd decides what to save there."""
    if torch.compiler.is_compiling():
        return False
    if torch._C._current_graph_task_id() != -1:
        return True
    hooks = torch._C._autograd._top_saved_tensors_default_hooks(True)
    return hooks is not None and "_checkpoint_hook" in getattr(hooks[0], "__qualname__", "")
