"""One call patches a transformers model so that its binary training masks are kept packed.

`patch_model` works on the model instance only, through public mechanisms:

- every ``nn.Dropout`` module is swapped for a `layers.PackedDropout` (found by walking
  ``named_modules()``, replaced with ``set_submodule``; same p, same RNG stream, 1-bit mask);
- functional dropout calls (``F.dropout`` in model code) go through `layers.packed_dropout` while
  a module that may make them runs forward (see `functional_dropout`; forward hooks on those
  modules): a transformers module holding a dropout probability as a float (how transformers code
  feeds ``F.dropout``), or code from outside torch, transformers, peft and packedbool;
- attention-probability dropout and boolean attention masks go through an attention function and
  a mask function registered with transformers' ``AttentionInterface`` / ``AttentionMaskInterface``
  under one name (see `hf_attention`), selected with ``model.set_attn_implementation``; they
  reproduce the implementation the model used before ("sdpa" or "eager") bit for bit. The model
  gets its own copy of its config first, so other models sharing that config object are untouched.
  A model whose attention does not dispatch there (Longformer, BLOOM, Falcon, DeBERTa, ...) gets
  its attention modules recomputed in backward, their dropout masks replayed from bits (see
  `replayed_attention`);
- MoE expert dispatch goes through an experts function registered with ``ExpertsInterface``
  (see `hf_moe`), selected with ``model.set_experts_implementation``;
- GELU / SiLU-like activation modules are wrapped so their output is recomputed in backward instead
  of kept (see `recompute_activations`; not a mask, but the same guarantee: bit-identical, less kept).

Everything is found from the model's attributes, never from its source text: attention modules
are the classes its transformers submodels declare in ``_can_record_outputs`` (``"attentions"``,
``"cross_attentions"``), experts modules carry the ``has_gate`` flag and the dispatching forward
of ``use_experts_implementation``, and a switch counts only once the model's config reads the new
implementation. `include` / `exclude` (see `module_filter`) leave chosen modules alone.

`unpatch_model` puts the original modules and implementations back; `report` says what is
patched now. Patching twice is harmless: a second call first undoes the first.

Example:
    >>> from integrations import patch_model
    >>> model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased")
    >>> print(patch_model(model))      # train as before; masks now take 1 bit per element
    packed: dropout=38, functional_dropout=0, attention=12, router=0, activation=12 (attn_implementation='packedbool')
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from bittensor_core.errors import PackedBoolTypeError
from layers import MaskStorage, PackedDropout
from layers.activation_recompute import RecomputedActivation, recompute_scope

from .functional_dropout import ModuleRoute
from .hf_attention import STOCK
from .module_filter import EXCLUDED, ModuleFilter, Patterns
from .replayed_attention import RECOMPUTED

REFERENCE_EXPERTS = "grouped_mm"  # the experts implementation the packed routing reproduces op for op
KINDS = ("dropout", "functional_dropout", "attention", "router", "activation")
# Wrappers whose inner model is patched: attribute holding it, by wrapper type name (DDP, FSDP1,
# DataParallel, torch.compile). Matched by type, so a user's own module with a `.module` is not one.
_WRAPPERS = {
    "DistributedDataParallel": "module",
    "DataParallel": "module",
    "FullyShardedDataParallel": "module",
    "OptimizedModule": "_orig_mod",
}
_STATE = "_packedbool_patch"
_RAN = "_packedbool_ran"  # set on the model and on each swapped dropout module once it has run
_OURS = PackedDropout.__module__.partition(".")[0]  # packedbool's layers: they call packed_dropout themselves


@dataclass
class PatchReport:
    """What `patch_model` packed, and what it left alone and why.

    Attributes:
        replaced: count per kind: ``dropout`` (nn.Dropout modules swapped; once the model has run,
            those that ran), ``functional_dropout``
            (F.dropout / torch.dropout calls packed since the model's latest forward began:
            observed, so 0 until it has run), ``attention`` (attention modules whose config now selects the
            packed attention function, plus attention modules recomputed in backward: once the model
            has run, those that ran recomputed), ``router``
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
        names = [
            f"{what}={name!r}"
            for what, name in (
                ("attn_implementation", self.attn_implementation),
                ("experts_implementation", self.experts_implementation),
            )
            if name is not None
        ]
        lines = [f"packed: {counts}" + (f" ({', '.join(names)})" if names else "")]
        lines += [f"not packed: {where}: {why}" for where, why in self.skipped]
        return "\n".join(lines)


@dataclass
class _PatchState:
    """Kept on the patched model so that `unpatch_model` can undo exactly what was done."""

    scope: ModuleFilter
    originals: dict[str, nn.Module] = field(default_factory=dict)  # module path -> the module there before
    attn_before: dict[str, str | None] | None = None  # None: attention was not switched
    experts_before: dict[str, str | None] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    configs: list[tuple[Any, str, Any]] = field(default_factory=list)  # (owner, attribute, original config)
    route: ModuleRoute | None = None  # functional dropout
    stock: list[nn.Module] = field(default_factory=list)  # attention modules excluded by filter
    checkpointed: list[nn.Module] = field(default_factory=list)  # attention modules recomputed in backward
    hooks: list[RemovableHandle] = field(default_factory=list)  # activation-recompute scope, ran flags
    # the transformers registrations the switched implementations name (registries are per process)
    registrations: list[partial] = field(default_factory=list)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (``torch.load`` of a whole model, a spawned process): register the packed functions
        its config names again, since a new process's transformers registries do not hold them."""
        self.__dict__.update(state)
        for register in self.registrations:
            register()

    def exclude(self, path: str) -> bool:
        """Whether the filters leave the module at `path` alone (then it is reported as such)."""
        if self.scope.packs(path):
            return False
        self.skipped.append((path, EXCLUDED))
        return True


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
    model = _unwrap(model)
    unpatch_model(model)
    state = _PatchState(ModuleFilter(model, include, exclude))
    object.__setattr__(model, _STATE, state)  # a plain attribute: not a submodule, not in state_dict
    try:
        if dropout:
            _swap_dropouts(model, options, state)
            _route_functional_dropouts(model, options, state)
        if (attention or router) and hasattr(model, "set_attn_implementation"):
            _own_config(model, state)
        if attention:
            _switch_attention(model, options, flash, state)
        if router:
            _switch_experts(model, options, state)
        if activations:
            _recompute_activations(model, state)
        _flag_runs(model, state)
    except BaseException:
        unpatch_model(model)  # nothing half-patched
        raise
    return report(model)


def unpatch_model(model: nn.Module) -> PatchReport:
    """Undo `patch_model`: original modules, attention and experts implementations. No-op if unpatched.

    Returns:
        The report of the (now unpatched) model: all counts 0.
    """
    model = _unwrap(model)
    state: _PatchState | None = model.__dict__.pop(_STATE, None)
    if state is not None:
        for path, original in state.originals.items():
            try:
                swapped = model.get_submodule(path)
            except AttributeError:  # removed since patching (peft's merge_and_unload drops lora_dropout)
                continue
            # the swapped module followed model.train() / eval() since patching: so does the original
            model.set_submodule(path, original.train(swapped.training))
        if state.route is not None:
            state.route.remove()
        for handle in state.hooks:
            handle.remove()
        for owner, attr, config in state.configs:  # the original config objects, never modified
            setattr(owner, attr, config)
        for module in state.checkpointed:
            del module.forward  # the instance attribute set by replayed_attention.replay
            module.__dict__.pop(RECOMPUTED, None)
        model.__dict__.pop(_RAN, None)
        for module in state.stock:
            delattr(module, STOCK)
    return report(model)


def report(model: nn.Module) -> PatchReport:
    """What is packed in `model` now (counted from the model itself) and what was skipped and why."""
    model = _unwrap(model)
    state: _PatchState | None = model.__dict__.get(_STATE)
    out = PatchReport(skipped=list(state.skipped) if state else [])
    ran = _RAN in model.__dict__  # once the model has run, count only what ran packed
    out.replaced["dropout"] = sum(
        isinstance(m, PackedDropout) and (not ran or _RAN in m.__dict__) for m in model.modules()
    )
    out.replaced["activation"] = sum(isinstance(m, RecomputedActivation) for m in model.modules())
    out.replaced["functional_dropout"] = state.route.calls if state and state.route else 0
    if state is not None and state.attn_before is not None:
        name = out.attn_implementation = model.config._attn_implementation
        out.replaced["attention"] = sum(
            getattr(m, "config", model.config)._attn_implementation == name and not hasattr(m, STOCK)
            for _, m in _attention_modules(model)
        )
    out.replaced["attention"] += (
        sum(not ran or RECOMPUTED in m.__dict__ for m in state.checkpointed) if state else 0
    )
    if state is not None and state.experts_before is not None:
        out.experts_implementation = model.config._experts_implementation
        out.replaced["router"] = sum(_is_experts(m) for m in model.modules())
    return out


# ---- the three kinds ----------------------------------------------------------------------------
def _flag_runs(model: nn.Module, state: _PatchState) -> None:
    """Flag the model and each swapped dropout module when they run, so that `report` counts, once the
    model has run, only the dropout modules that ran (Falcon hands its attention dropout's p to SDPA
    and never calls the module)."""
    swapped = {id(m): m for m in model.modules() if isinstance(m, PackedDropout)}
    state.hooks += [m.register_forward_hook(_mark_ran) for m in [model, *swapped.values()]]


def _mark_ran(module: nn.Module, args: Any, output: Any) -> None:
    module.__dict__[_RAN] = True


def _swap_dropouts(model: nn.Module, options: MaskStorage, state: _PatchState) -> None:
    replacements: dict[int, nn.Module] = {}  # one replacement per module, even if registered twice
    for path, module in list(model.named_modules(remove_duplicate=False)):
        if type(module) is nn.Dropout:
            if state.exclude(path):
                continue
            if id(module) not in replacements:
                new = PackedDropout(
                    module.p,
                    module.inplace,
                    bits=options.bits,
                    unpack=options.unpack,
                    storage=options.storage,
                    sampler=options.sampler,
                )
                replacements[id(module)] = new.train(module.training)
            state.originals[path] = module
            model.set_submodule(path, replacements[id(module)])
        elif isinstance(module, nn.modules.dropout._DropoutNd) and not isinstance(module, PackedDropout):
            state.skipped.append(
                (path, f"{type(module).__name__} is not nn.Dropout (it draws a different mask); left as is")
            )


def _route_functional_dropouts(model: nn.Module, options: MaskStorage, state: _PatchState) -> None:
    """Route F.dropout calls while the model runs, if a packed module may make them (no mode otherwise:
    a TorchFunctionMode sees every torch call, which costs Python time per op)."""
    # attention modules hand their p to the attention function (T5 declares a wrapper: its insides too)
    attention = {id(inner) for _, m in _attention_modules(model) for inner in m.modules()}
    named = list(model.named_modules())
    callers = {path for path, m in named if id(m) not in attention and _may_call_dropout(m)}
    if not [path for path in sorted(callers) if not state.exclude(path)]:
        return
    packs = {path: state.scope.packs(path) for path, _ in named}
    # the callers, and where the filters' choice changes (a module whose choice differs from its parent's)
    modules = {
        m: packs[path]
        for path, m in named
        if path in callers or (path and packs[path] != packs[path.rpartition(".")[0]])
    }
    state.route = ModuleRoute(model, modules, options)


def _recompute_activations(model: nn.Module, state: _PatchState) -> None:
    from .recompute_activations import during_forward, wrap_activations

    originals = wrap_activations(model, skip=state.exclude)
    if originals:
        state.originals.update(originals)
        state.hooks += during_forward(model, recompute_scope, eager_only=True)


def _own_config(model: nn.Module, state: _PatchState) -> None:
    """Give `model` a private copy of its config (and sub-configs), so that switching its attention /
    experts implementation cannot switch another model sharing the same config object."""
    from transformers import PretrainedConfig

    memo: dict[int, Any] = {}
    copy.deepcopy(model.config, memo)
    for module in model.modules():
        for attr, value in list(vars(module).items()):
            if isinstance(value, PretrainedConfig) and id(value) in memo:
                state.configs.append((module, attr, value))
                setattr(module, attr, memo[id(value)])


def _switch_attention(model: nn.Module, options: MaskStorage, flash: bool, state: _PatchState) -> None:
    from .hf_attention import REFERENCES, eager_function, register_attention

    if not hasattr(model, "set_attn_implementation"):
        state.skipped.append(("attention", f"{type(model).__name__} is not a transformers PreTrainedModel"))
        return
    before = _implementations(model, "_attn_implementation")
    used = sorted({impl for impl in before.values() if impl is not None})
    if len(used) != 1 or used[0] not in REFERENCES:
        state.skipped.append(
            (
                "attention",
                f"attention stays on {used}: packed attention reproduces only one of {REFERENCES}"
                " for the whole model; set_attn_implementation('sdpa') before patching to pack it",
            )
        )
        return
    reference = used[0]
    attention = _attention_modules(model)
    if reference == "eager" and any(eager_function(m) is None for _, m in attention):
        _replay_attentions(
            model, options, state, "is computed in its modules' own code (no eager_attention_forward)"
        )
        return
    state.registrations.append(partial(register_attention, options, flash=flash, reference=reference))
    name = state.registrations[-1]()
    model.set_attn_implementation(name)
    if model.config._attn_implementation != name:
        _replay_attentions(
            model, options, state, "does not dispatch through transformers' AttentionInterface"
        )
        return
    state.attn_before = before
    for path, module in attention:
        if state.exclude(path):  # the packed function runs the reference unchanged for these
            for inner in module.modules():  # the module calling the function may be inside (T5)
                if not hasattr(inner, STOCK):
                    setattr(inner, STOCK, True)
                    state.stock.append(inner)


def _replay_attentions(model: nn.Module, options: MaskStorage, state: _PatchState, why: str) -> None:
    """Attention outside AttentionInterface: its cores recomputed in backward, dropout replayed from bits."""
    from .replayed_attention import attention_cores, replay

    state.checkpointed = [m for _, m in attention_cores(model, state.exclude)]
    replay(state.checkpointed, options)
    reason = (
        f"{type(model).__name__}'s attention {why}; {len(state.checkpointed)} attention modules are recomputed"
        " in backward instead (checkpointed, their dropout masks replayed from 1-bit copies)"
    )
    if not state.checkpointed:
        reason = (
            f"{type(model).__name__}'s attention {why}, and no attention module applying dropout was found"
        )
    state.skipped.append(("attention", reason))


def _switch_experts(model: nn.Module, options: MaskStorage, state: _PatchState) -> None:
    experts = [m for m in model.modules() if _is_experts(m)]
    if experts and not hasattr(model, "set_experts_implementation"):
        state.skipped.append(("router", f"{type(model).__name__} is not a transformers PreTrainedModel"))
        return
    if not experts:
        moe_like = sorted(
            {type(m).__name__ for m in model.modules() if "experts" in type(m).__name__.lower()}
        )
        if moe_like:
            state.skipped.append(
                ("router", f"{moe_like} do not dispatch through transformers' ExpertsInterface")
            )
        return
    excluded = [path for path, m in model.named_modules() if _is_experts(m) and state.exclude(path)]
    if excluded:
        state.skipped.append(
            (
                "router",
                f"the experts implementation is chosen per model and {excluded} are"
                " excluded by filter: every experts module is left as is",
            )
        )
        return
    from .hf_moe import register_experts

    before = model.get_experts_implementation()
    if set(before.values()) != {REFERENCE_EXPERTS}:
        state.skipped.append(
            (
                "router",
                f"packed routing reproduces transformers' {REFERENCE_EXPERTS!r} experts "
                f"(the default); this model runs {before}: left as is "
                f"(set_experts_implementation({REFERENCE_EXPERTS!r}) first to pack it)",
            )
        )
        return
    state.registrations.append(partial(register_experts, options))
    name = state.registrations[-1]()
    model.set_experts_implementation(name)
    if model.config._experts_implementation != name:
        state.skipped.append(("router", f"{type(model).__name__} cannot switch its experts implementation"))
        return
    state.experts_before = before


# ---- helpers --------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / FSDP / DataParallel (``.module``), torch.compile (``._orig_mod``) and peft
    (``PeftModel.base_model.model``) wrappers: the patch state lives on the model itself, so the model
    ``merge_and_unload()`` hands back is still the one `unpatch_model` restores."""
    if not isinstance(model, nn.Module):
        raise PackedBoolTypeError(
            f"expected a torch.nn.Module (a transformers model or any module), got {type(model).__name__}: {model!r:.80}."
        )
    while (inner := _inner(model)) is not None:
        model = inner
    return model


def _inner(model: nn.Module) -> nn.Module | None:
    attr = _WRAPPERS.get(type(model).__name__)
    if attr is not None:
        inner = getattr(model, attr, None)
    else:
        peft = sys.modules.get("peft")  # only a model built by peft can be a PeftModel: never import it
        is_peft = peft is not None and isinstance(model, peft.PeftModel)
        inner = getattr(model.base_model, "model", None) if is_peft else None  # PeftModel -> tuner -> model
    return inner if isinstance(inner, nn.Module) else None


def _implementations(model: nn.Module, attr: str) -> dict[str, str | None]:
    """``{"": impl, sub_config: impl, ...}``, the form ``set_attn_implementation`` takes back."""
    config = model.config
    out = {"": getattr(config, attr)}
    for key in getattr(config, "sub_configs", {}):
        sub = getattr(config, key, None)
        if sub is not None:
            out[key] = getattr(sub, attr)
    return out


def _is_experts(module: nn.Module) -> bool:
    """An experts module whose forward transformers' ``use_experts_implementation`` dispatches."""
    return (
        hasattr(module, "has_gate")
        and hasattr(type(module).forward, "__wrapped__")
        and hasattr(module, "config")
    )


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of the attention modules `model`'s transformers submodels declare: the classes
    (or class names) under ``_can_record_outputs["attentions"]`` / ``["cross_attentions"]``, which
    transformers hooks to return attention weights."""
    classes: set[type] = set()
    names: set[str] = set()
    for sub in model.modules():
        for key, specs in (getattr(sub, "_can_record_outputs", None) or {}).items():
            if "attentions" not in key:
                continue
            for spec in specs if isinstance(specs, list) else [specs]:  # a class, a name or an OutputRecorder
                target = getattr(spec, "target_class", spec) or getattr(spec, "class_name", None)
                if isinstance(target, str):
                    names.add(target)
                else:
                    classes.add(target)
    return [
        (path, m)
        for path, m in model.named_modules()
        if isinstance(m, tuple(classes)) or type(m).__name__ in names
    ]


def _may_call_dropout(module: nn.Module) -> bool:
    """Whether `module`'s own code may call F.dropout: a transformers module holding a positive
    dropout probability as a float (``self.dropout = config.dropout``, fed to F.dropout), or code
    from outside torch, transformers, peft and packedbool, which we cannot vouch for."""
    library = type(module).__module__.partition(".")[0]
    if library in ("torch", "peft", _OURS):
        return False
    if library != "transformers":
        return True
    return any("dropout" in attr and isinstance(v, float) and v > 0 for attr, v in vars(module).items())
