"""Patch kind "router": MoE expert dispatch through a packed routing mask.

A model whose experts modules dispatch through transformers' ``ExpertsInterface``
(`hf_detection.is_experts`) and run its default ``grouped_mm`` is switched to the packed experts
function (`hf_moe`), which reproduces it op for op. The implementation is chosen per model: if the
filters exclude any experts module, every one is left as is.

Example:
    >>> patch = Experts.apply(mixtral, MaskStorage(), scope)
    >>> patch.implementation(mixtral)
    'packedbool'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch import nn

from layers import MaskStorage

from .hf_detection import is_experts
from .hf_moe import register_experts
from .patch_kind import Patch, Scope

REFERENCE_EXPERTS = "grouped_mm"  # the experts implementation the packed routing reproduces op for op


@dataclass
class Experts(Patch):
    kind = "router"
    registration: partial | None = None  # registers the packed function under the name it returns
    switched: bool = False  # the model's config selects it

    @classmethod
    def apply(cls, model: nn.Module, options: MaskStorage, scope: Scope) -> Experts:
        experts = [m for m in model.modules() if is_experts(m)]
        if experts and not hasattr(model, "set_experts_implementation"):
            scope.skipped.append(("router", f"{type(model).__name__} is not a transformers PreTrainedModel"))
            return cls()
        if not experts:
            moe_like = sorted(
                {type(m).__name__ for m in model.modules() if "experts" in type(m).__name__.lower()}
            )
            if moe_like:
                why = f"{moe_like} do not dispatch through transformers' ExpertsInterface"
                scope.skipped.append(("router", why))
            return cls()
        excluded = [path for path, m in model.named_modules() if is_experts(m) and scope.exclude(path)]
        if excluded:
            why = (
                f"the experts implementation is chosen per model and {excluded} are"
                " excluded by filter: every experts module is left as is"
            )
            scope.skipped.append(("router", why))
            return cls()
        before = model.get_experts_implementation()
        if set(before.values()) != {REFERENCE_EXPERTS}:
            why = (
                f"packed routing reproduces transformers' {REFERENCE_EXPERTS!r} experts "
                f"(the default); this model runs {before}: left as is "
                f"(set_experts_implementation({REFERENCE_EXPERTS!r}) first to pack it)"
            )
            scope.skipped.append(("router", why))
            return cls()
        registration = partial(register_experts, options)
        name = registration()
        model.set_experts_implementation(name)
        if model.config._experts_implementation != name:
            why = f"{type(model).__name__} cannot switch its experts implementation"
            scope.skipped.append(("router", why))
            return cls(registration)
        return cls(registration, switched=True)

    # undo: the implementation switched goes back with the model's original config (`hf_detection.own_config`)

    def count(self, model: nn.Module, ran: bool) -> int:
        return sum(is_experts(m) for m in model.modules()) if self.switched else 0

    def implementation(self, model: nn.Module) -> str | None:
        return model.config._experts_implementation if self.switched else None
