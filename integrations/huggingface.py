"""One call patches a transformers model so that its binary training masks are kept packed.

`patch_model` works on the model instance only, through public mechanisms, and applies each patch
kind from its own file (a `patch_kind.Patch`, which undoes and counts itself): ``dropout``
(`patch_dropout`: nn.Dropout modules swapped), ``functional_dropout`` (`patch_functional_dropout`),
``attention`` (`patch_attention`: the packed attention functions, or attention recomputed in
backward), ``router`` (`patch_experts`: MoE dispatch) and ``activation`` (`patch_activations`:
outputs recomputed in backward). Everything is found from the model's attributes (`hf_detection`);
the model gets its own copy of its config before an implementation is switched, so other models
sharing that config object are untouched. `include` / `exclude` (`module_filter`) leave chosen
modules alone. `unpatch_model` puts the original modules and implementations back; `report` says
what is patched now. Patching twice is harmless: a second call first undoes the first.

Example:
    >>> from integrations import patch_model
    >>> model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased")
    >>> print(patch_model(model))      # train as before; masks now take 1 bit per element
    packed: dropout=38, functional_dropout=0, attention=12, router=0, activation=12 (attn_implementation='packedbool')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from layers import MaskStorage

from .hf_detection import own_config, unwrap
from .module_filter import ModuleFilter, Patterns
from .patch_activations import Activations
from .patch_attention import Attention
from .patch_dropout import DropoutModules
from .patch_experts import Experts
from .patch_functional_dropout import FunctionalDropout
from .patch_kind import RAN, Patch, Scope

__all__ = ["patch_model", "unpatch_model"]

PATCHES: tuple[type[Patch], ...] = (DropoutModules, FunctionalDropout, Attention, Experts, Activations)
KINDS = tuple(patch.kind for patch in PATCHES)
_STATE = "_packedbool_patch"


@dataclass
class PatchReport:
    """What `patch_model` packed, and what it left alone and why.

    Attributes:
        replaced: count per kind: ``dropout`` (nn.Dropout modules swapped; once the model has run,
            those that ran), ``functional_dropout`` (F.dropout / torch.dropout calls packed since the
            model's latest forward began: observed, so 0 until it has run), ``attention`` (attention
            modules whose config now selects the packed attention function, plus attention modules
            recomputed in backward: once the model has run, those that ran recomputed), ``router``
            (MoE experts modules now dispatching through a packed routing mask), ``activation``
            (activation modules whose output is recomputed in backward).
        skipped: (where, why) for everything a user might expect packed but is not; modules left
            alone by `include` / `exclude` say "excluded by filter".
        attn_implementation / experts_implementation: the registry names now set, or None.
    """

    replaced: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skipped: list[tuple[str, str]] = field(default_factory=list)
    attn_implementation: str | None = None
    experts_implementation: str | None = None

    def __str__(self) -> str:
        counts = ", ".join(f"{kind}={n}" for kind, n in self.replaced.items())
        names = [f"{k}={v!r}" for k, v in vars(self).items() if k.endswith("_implementation") and v]
        lines = [f"packed: {counts}" + (f" ({', '.join(names)})" if names else "")]
        lines += [f"not packed: {where}: {why}" for where, why in self.skipped]
        return "\n".join(lines)


@dataclass
class _PatchState:
    """Kept on the patched model so that `unpatch_model` can undo exactly what was done."""

    scope: Scope
    patches: dict[str, Patch]  # kind -> the patch applied (one that applied nothing where turned off)
    configs: list[tuple[Any, str, Any]] = field(default_factory=list)  # (owner, attribute, original config)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (``torch.load`` of a whole model, a spawned process): register the packed functions
        its config names again, since a new process's transformers registries do not hold them."""
        self.__dict__.update(state)
        for patch in self.patches.values():
            patch.register()


def patch_model(
    model: nn.Module,
    *,
    bits: int = 1,
    unpack: str = "lazy",
    dropout: bool = True,
    attention: bool = True,
    router: bool = True,
    storage: str = "packed",
    sampler: str = "exact",
    flash: bool = True,
    include: Patterns = None,
    exclude: Patterns = None,
    activations: bool = True,
) -> PatchReport:
    """Patch `model` in place so its binary training masks are stored at `bits` bits per element.

    Args:
        model: a transformers ``PreTrainedModel`` (or any nn.Module: then only its dropouts are
            packed), possibly wrapped in DDP / FSDP / DataParallel / torch.compile (the model
            inside is patched). Patch before ``torch.compile``: a compiled model keeps the graph
            it traced.
        bits: storage width of every mask: 1 (default), 2, 4 or 8.
        unpack: ``"lazy"`` (unpack on use, keep nothing) or ``"cached"``.
        dropout: swap ``nn.Dropout`` modules for ``PackedDropout`` and route functional dropout
            calls through ``packed_dropout`` (bit-identical outputs).
        attention: route attention through the packed attention and mask functions (models on
            "sdpa" or "eager"; others are reported in ``skipped``).
        router: route MoE experts through the packed dispatch mask.
        storage: ``"packed"`` or ``"seeded"`` (0 bits: regenerate masks in backward).
        sampler: ``"exact"`` (nn.Dropout's random numbers) or ``"fast"`` (a counter-based
            generator: other masks, same keep rate), for every dropout and attention mask drawn.
        flash: let attention delegate to flash-attn where it can run (CUDA, fp16/bf16, no mask).
        include: pack only modules whose qualified name (or that of a module containing them)
            matches: a ``str`` is a regular expression matched in full (``re.fullmatch``), a list
            holds names matched as suffixes (``name == n or name.endswith("." + n)``), as PEFT's
            ``target_modules``. None: every module.
        exclude: leave alone the modules matching it (same forms, as PEFT's ``exclude_modules``);
            they are listed in the report's ``skipped`` as "excluded by filter". Attention and
            experts implementations are chosen per model: excluded attention modules run their
            reference implementation unchanged, and any excluded experts module keeps the whole
            model's experts as they are.
        activations: recompute the output of every GELU / SiLU-like activation module in backward
            from its input (which autograd keeps anyway) instead of keeping it
            (`layers.RecomputedActivation`): the same op recomputes it, so results are bit-identical,
            and one (batch, seq, intermediate) float per MLP is not kept.

    Raises:
        PackedBoolValueError: a bad option, an invalid regular expression, or a pattern matching
            no module name (the message names it).

    Returns:
        A `PatchReport`; ``print`` it to see what was packed and what was not, and why.

    Example:
        >>> report = patch_model(model, bits=1)
        >>> report.replaced
        {'dropout': 38, 'functional_dropout': 0, 'attention': 12, 'router': 0, 'activation': 12}
        >>> unpatch_model(model)   # back to the original modules and attention implementation
        >>> patch_model(peft_model, exclude=["lora_dropout"])   # LoRA dropouts stay nn.Dropout
    """
    options = MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler)
    model = unwrap(model)
    unpatch_model(model)
    state = _PatchState(Scope(ModuleFilter(model, include, exclude)), {})
    object.__setattr__(model, _STATE, state)  # a plain attribute: not a submodule, not in state_dict
    turned_on = (dropout, dropout, attention, router, activations)  # in the order of PATCHES
    try:
        if (attention or router) and hasattr(model, "set_attn_implementation"):
            state.configs = own_config(model)
        for kind, on in zip(PATCHES, turned_on, strict=True):
            extra = {"flash": flash} if kind is Attention else {}
            state.patches[kind.kind] = kind.apply(model, options, state.scope, **extra) if on else kind()
        state.patches["dropout"].flag_runs(model)
    except BaseException:
        unpatch_model(model)  # nothing half-patched
        raise
    return report(model)


def unpatch_model(model: nn.Module) -> PatchReport:
    """Undo `patch_model`: original modules, attention and experts implementations. No-op if unpatched.

    Returns:
        The report of the (now unpatched) model: all counts 0.
    """
    model = unwrap(model)
    state: _PatchState | None = model.__dict__.pop(_STATE, None)
    if state is not None:
        for patch in reversed(state.patches.values()):
            patch.undo(model)
        for owner, attr, config in state.configs:  # the original config objects, never modified
            setattr(owner, attr, config)
    return report(model)


def report(model: nn.Module) -> PatchReport:
    """What is packed in `model` now (counted from the model itself) and what was skipped and why."""
    model = unwrap(model)
    state: _PatchState | None = model.__dict__.get(_STATE)
    patches = {kind.kind: kind() for kind in PATCHES} | (state.patches if state else {})
    ran = RAN in model.__dict__  # once the model has run, count only what ran packed
    return PatchReport(
        replaced={kind: patch.count(model, ran) for kind, patch in patches.items()},
        skipped=list(state.scope.skipped) if state else [],
        attn_implementation=patches["attention"].implementation(model),
        experts_implementation=patches["router"].implementation(model),
    )
