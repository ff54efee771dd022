"""Patch kind "activation": GELU / SiLU-like activation modules recomputed in backward instead of kept.

Not a mask, but the same guarantee: bit-identical, less kept. Each activation module is wrapped in a
`layers.RecomputedActivation` (`recompute_activations.wrap_activations`), and the model's forward
runs inside `layers.activation_recompute.recompute_scope` (`recompute_activations.during_forward`).

Example:
    >>> patch = Activations.apply(bert, MaskStorage(), scope)
    >>> patch.count(bert, ran=False)
    12
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.utils.hooks import RemovableHandle

from layers import MaskStorage, RecomputedActivation
from layers.activation_recompute import recompute_scope

from .patch_kind import Patch, Scope, put_back
from .recompute_activations import during_forward, wrap_activations


@dataclass
class Activations(Patch):
    kind = "activation"
    originals: dict[str, nn.Module] = field(default_factory=dict)  # path -> the activation there before
    hooks: list[RemovableHandle] = field(default_factory=list)  # the scope around the model's forward

    @classmethod
    def apply(cls, model: nn.Module, options: MaskStorage, scope: Scope) -> Activations:
        originals = wrap_activations(model, skip=scope.exclude)
        if not originals:
            return cls()
        return cls(originals, during_forward(model, recompute_scope, eager_only=True))

    def undo(self, model: nn.Module) -> None:
        for handle in self.hooks:
            handle.remove()
        put_back(model, self.originals)

    def count(self, model: nn.Module, ran: bool) -> int:
        """Wrapped activation modules in `model` (its own included)."""
        return sum(isinstance(m, RecomputedActivation) for m in model.modules())
