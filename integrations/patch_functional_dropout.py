"""Patch kind "functional_dropout": F.dropout calls in model code routed through packed dropout.

A `functional_dropout.ModuleRoute` is entered while a module that may call F.dropout runs forward
(`hf_detection.may_call_dropout`), and only if there is one: a TorchFunctionMode sees every torch
call, which costs Python time per op. Attention modules are not callers: they hand their p to the
attention function (its own patch kind). The count is observed: calls packed since the model's
latest forward began.

Example:
    >>> patch = FunctionalDropout.apply(bart, MaskStorage(), scope)
    >>> bart(**batch); patch.count(bart, ran=True)
    12
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from layers import MaskStorage

from .functional_dropout import ModuleRoute
from .hf_detection import attention_modules, may_call_dropout
from .patch_kind import Patch, Scope


@dataclass
class FunctionalDropout(Patch):
    kind = "functional_dropout"
    route: ModuleRoute | None = None

    @classmethod
    def apply(cls, model: nn.Module, options: MaskStorage, scope: Scope) -> FunctionalDropout:
        # attention modules hand their p to the attention function (T5 declares a wrapper: its insides too)
        attention = {id(inner) for _, m in attention_modules(model) for inner in m.modules()}
        named = list(model.named_modules())
        callers = {path for path, m in named if id(m) not in attention and may_call_dropout(m)}
        if not [path for path in sorted(callers) if not scope.exclude(path)]:
            return cls()
        packs = {path: scope.packs(path) for path, _ in named}
        # the callers, and where the filters' choice changes (a module whose choice differs from its parent's)
        modules = {
            m: packs[path]
            for path, m in named
            if path in callers or (path and packs[path] != packs[path.rpartition(".")[0]])
        }
        return cls(ModuleRoute(model, modules, options))

    def undo(self, model: nn.Module) -> None:
        if self.route is not None:
            self.route.remove()

    def count(self, model: nn.Module, ran: bool) -> int:
        return self.route.calls if self.route is not None else 0
