"""Patch kind "attention": attention-probability dropout and boolean masks kept packed.

A model whose attention dispatches through transformers' ``AttentionInterface`` is switched to the
packed attention and mask functions (`hf_attention`), registered under one name and reproducing the
implementation it used before ("sdpa" or "eager") bit for bit; attention modules excluded by the
filters are flagged `hf_attention.STOCK` and run that reference unchanged. A model whose attention
does not dispatch there (Longformer, BLOOM, Falcon, DeBERTa, ...) gets its attention cores
recomputed in backward, their dropout masks replayed from bits (`replayed_attention`).

Example:
    >>> patch = Attention.apply(bert, MaskStorage(), scope, flash=True)
    >>> patch.implementation(bert), patch.count(bert, ran=False)
    ('packedbool', 12)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from torch import nn

from layers import MaskStorage

from . import hf_attention  # its functions looked up when called: a replaced one is the one called
from .hf_attention import REFERENCES, STOCK
from .hf_detection import attention_modules, implementations
from .patch_kind import Patch, Scope
from .replayed_attention import RECOMPUTED, attention_cores, replay


@dataclass
class Attention(Patch):
    kind = "attention"
    registration: partial | None = None  # registers the packed functions under the name it returns
    switched: bool = False  # the model's config selects them
    stock: list[nn.Module] = field(default_factory=list)  # attention modules excluded by filter
    recomputed: list[nn.Module] = field(default_factory=list)  # attention cores recomputed in backward

    @classmethod
    def apply(cls, model: nn.Module, options: MaskStorage, scope: Scope, *, flash: bool = True) -> Attention:
        if not hasattr(model, "set_attn_implementation"):
            why = f"{type(model).__name__} is not a transformers PreTrainedModel"
            scope.skipped.append(("attention", why))
            return cls()
        before = implementations(model, "_attn_implementation").values()
        used = sorted({impl for impl in before if impl is not None})
        if len(used) != 1 or used[0] not in REFERENCES:
            why = (
                f"attention stays on {used}: packed attention reproduces only one of {REFERENCES}"
                " for the whole model; set_attn_implementation('sdpa') before patching to pack it"
            )
            scope.skipped.append(("attention", why))
            return cls()
        reference = used[0]
        attention = attention_modules(model)
        if reference == "eager" and any(hf_attention.eager_function(m) is None for _, m in attention):
            why = "is computed in its modules' own code (no eager_attention_forward)"
            return cls.replayed(model, options, scope, why, None)
        registration = partial(hf_attention.register_attention, options, flash=flash, reference=reference)
        name = registration()
        model.set_attn_implementation(name)
        if model.config._attn_implementation != name:
            why = "does not dispatch through transformers' AttentionInterface"
            return cls.replayed(model, options, scope, why, registration)
        patch = cls(registration, switched=True)
        for path, module in attention:
            if scope.exclude(path):  # the packed function runs the reference unchanged for these
                for inner in module.modules():  # the module calling the function may be inside (T5)
                    if not hasattr(inner, STOCK):
                        setattr(inner, STOCK, True)
                        patch.stock.append(inner)
        return patch

    @classmethod
    def replayed(
        cls, model: nn.Module, options: MaskStorage, scope: Scope, why: str, registration: partial | None
    ) -> Attention:
        """Attention outside AttentionInterface: its cores recomputed in backward, dropout replayed from bits."""
        patch = cls(registration, recomputed=[m for _, m in attention_cores(model, scope.exclude)])
        replay(patch.recomputed, options)
        reason = (
            f"{type(model).__name__}'s attention {why}; {len(patch.recomputed)} attention modules are"
            " recomputed in backward instead (checkpointed, their dropout masks replayed from 1-bit copies)"
        )
        if not patch.recomputed:
            reason = f"{type(model).__name__}'s attention {why}, and no attention module applying dropout was found"
        scope.skipped.append(("attention", reason))
        return patch

    def undo(self, model: nn.Module) -> None:
        # the implementation switched goes back with the model's original config (`hf_detection.own_config`)
        for module in self.recomputed:
            del module.forward  # the instance attribute set by replayed_attention.replay
            module.__dict__.pop(RECOMPUTED, None)
        for module in self.stock:
            delattr(module, STOCK)

    def count(self, model: nn.Module, ran: bool) -> int:
        """Attention modules whose config selects the packed function, plus the recomputed ones (once the
        model has run, those that ran recomputed)."""
        recomputed = sum(not ran or RECOMPUTED in m.__dict__ for m in self.recomputed)
        if not self.switched:
            return recomputed
        name = model.config._attn_implementation
        return recomputed + sum(
            getattr(m, "config", model.config)._attn_implementation == name and not hasattr(m, STOCK)
            for _, m in attention_modules(model)
        )

    def implementation(self, model: nn.Module) -> str | None:
        return model.config._attn_implementation if self.switched else None
