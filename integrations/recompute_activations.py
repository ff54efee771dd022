"""Put `layers.RecomputedActivation` on a model's activation modules, and its scope on the model's forward.

Every parameter-free leaf module from ``torch.nn.modules.activation`` or ``transformers.activations``
whose autograd node keeps only its input (GELU, SiLU, ...; probed once) is wrapped; others (ReLU,
GPT-2's tanh GELU written in Python, the pooler's tanh) are left as they are. `during_forward`
enters a context manager from a forward pre-hook on the model and leaves it from a forward hook:
active exactly while the model runs forward with grad enabled.

Example:
    >>> originals = wrap_activations(model)
    >>> handles = during_forward(model, recompute_scope, eager_only=True)
    >>> ...
    >>> unwrap_activations(model, originals); [h.remove() for h in handles]
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from bittensor_core.tracing import tracing
from layers.activation_recompute import RecomputedActivation, recomputable

__all__ = ["during_forward", "unwrap_activations", "wrap_activations"]

_ACTIVATION_MODULES = ("torch.nn.modules.activation", "transformers.activations")


def _is_activation(module: nn.Module) -> bool:
    is_leaf = next(module.children(), None) is None and next(module.parameters(), None) is None
    return is_leaf and type(module).__module__ in _ACTIVATION_MODULES and recomputable(module)


def wrap_activations(
    model: nn.Module, skip: Callable[[str], bool] = lambda path: False
) -> dict[str, nn.Module]:
    """Wrap every activation module of `model` (at module paths for which `skip` is false) in a
    `RecomputedActivation`; return ``{path: original}`` for `unwrap_activations`."""
    originals = {}
    inside_wrappers = {id(m.act) for m in model.modules() if isinstance(m, RecomputedActivation)}
    for path, module in list(model.named_modules(remove_duplicate=False)):
        if path and _is_activation(module) and id(module) not in inside_wrappers and not skip(path):
            originals[path] = module
            model.set_submodule(path, RecomputedActivation(module))
    return originals


def unwrap_activations(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Put the original activation modules back."""
    for path, original in originals.items():
        model.set_submodule(path, original)


def during_forward(
    model: nn.Module, context: Callable[[], AbstractContextManager], *, eager_only: bool = False
) -> list[RemovableHandle]:
    """Enter ``context()`` whenever `model` starts forward with grad enabled and leave it when forward
    ends (also on error); with `eager_only`, not while compiling (see `_DuringForward._applies`).
    Returns the two hook handles (``remove()`` both to stop)."""
    scope = _DuringForward(context, eager_only)
    return [
        model.register_forward_pre_hook(scope.enter),
        model.register_forward_hook(scope.leave, always_call=True),
    ]


class _DuringForward:
    """The two hooks of `during_forward`: bound methods of a module-level class, so a model carrying
    them pickles (``torch.save(model)``, multiprocessing spawn); `context` must be picklable too."""

    def __init__(self, context: Callable[[], AbstractContextManager], eager_only: bool) -> None:
        self.context, self.eager_only = context, eager_only
        self.active: list[AbstractContextManager] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"context": self.context, "eager_only": self.eager_only, "active": []}  # none open elsewhere

    def enter(self, module: nn.Module, args: Any) -> None:
        if self._applies():
            self.active.append(self.context())
            self.active[-1].__enter__()

    def leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._applies():
            self.active.pop().__exit__(None, None, None)

    def _applies(self) -> bool:
        """Whether the context is entered on this call (the same answer when forward ends): only with grad
        enabled (it is about what autograd saves: under no_grad, as in generate(), the hooks ask nothing
        more), and with `eager_only` not while torch.compile traces (dynamo cannot trace ``__enter__``
        of an arbitrary context manager)."""
        return torch.is_grad_enabled() and not (self.eager_only and tracing())
