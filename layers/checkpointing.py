"""The one place packedbool calls ``torch.utils.checkpoint``, and asks whether it is inside one.

NOTE (respect_saved_tensors_hooks): torch 2.14 added ``checkpoint(..., respect_saved_tensors_hooks=)``.
Left unset while a saved-tensor hook is active (``save_on_cpu``, ``pack_saved_bools``, a census), a
selective checkpoint warns (FutureWarning) and the default is announced to flip. packedbool passes
``False`` wherever the installed torch has the argument: the legacy behaviour, which keeps today's
memory and today's bit-identical results, said explicitly so it cannot change under us.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

# {"respect_saved_tensors_hooks": False} where the installed torch has the argument (2.14+), else {}.
EXPLICIT_HOOKS: dict[str, bool] = (
    {"respect_saved_tensors_hooks": False}
    if "respect_saved_tensors_hooks" in inspect.signature(_torch_checkpoint).parameters
    else {}
)


def checkpoint(fn: Callable[..., Any], *args: Any, preserve_rng_state: bool = True, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under a non-reentrant activation checkpoint: nothing `fn` saves is kept,
    backward recomputes it (replaying the RNG state when `preserve_rng_state`)."""
    return _torch_checkpoint(
        fn, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **EXPLICIT_HOOKS, **kwargs
    )


def inside_checkpoint() -> bool:
    """In the forward of a non-reentrant checkpoint (its saved-tensor hooks are on top), or in any
    recompute (it runs during backward). Never while compiling: AOTAutograd decides what to save there."""
    if torch.compiler.is_compiling():
        return False
    if torch._C._current_graph_task_id() != -1:
        return True
    hooks = torch._C._autograd._top_saved_tensors_default_hooks(True)
    return hooks is not None and "_checkpoint_hook" in getattr(hooks[0], "__qualname__", "")
