"""One call patches a transformers model so that its binary training masks are kept packed.

`patch_model` works on the model instance only, through public mechanisms:

- every ``nn.Dropout`` module is swapped for a `layers.PackedDropout` (found by walking
  ``named_modules()``, replaced with ``set_submodule``; same p, same RNG stream, 1-bit mask);
- functional dropout calls (``F.dropout`` in model code) made during the model's forward go
  through `layers.packed_dropout` (see `functional_dropout`; forward hooks on the model);
- attention-probability dropout and boolean attention masks go through an attention function and
  a mask function registered with transformers' ``AttentionInterface`` / ``AttentionMaskInterface``
  under one name (see `hf_attention`), selected with ``model.set_attn_implementation``; they
  reproduce the implementation the model used before ("sdpa" or "eager") bit for bit. The model
  gets its own copy of its config first, so other models sharing that config object are untouched;
- MoE expert dispatch goes through an experts function registered with ``ExpertsInterface``
  (see `hf_moe`), selected with ``model.set_experts_implementation``.

`unpatch_model` puts the original modules and implementations back; `report` says what is
patched now. Patching twice is harmless: a second call first undoes the first.

Example:
    >>> from integrations import patch_model
    >>> model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased")
    >>> print(patch_model(model))      # train as before; masks now take 1 bit per element
    packed: dropout=38, functional_dropout=0, attention=12, router=0 (attn_implementation='packedbool')
"""

from __future__ import annotations

import copy
import inspect
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from bittensor_core.errors import PackedBoolTypeError
from layers import MaskStorage, PackedDropout

KINDS = ("dropout", "functional_dropout", "attention", "router")
# Wrappers whose inner model is patched: attribute holding it, by wrapper type name (DDP, FSDP1,
# DataParallel, torch.compile). Matched by type, so a user's own module with a `.module` is not one.
_WRAPPERS = {
    "DistributedDataParallel": "module",
    "DataParallel": "module",
    "FullyShardedDataParallel": "module",
    "OptimizedModule": "_orig_mod",
}
_STATE = "_packedbool_patch"


@dataclass
class PatchReport:
    """What `patch_model` packed, and what it left alone and why.

    Attributes:
        replaced: count per kind: ``dropout`` (nn.Dropout modules swapped), ``functional_dropout``
            (modules whose code calls F.dropout / torch.dropout, now packed while the model runs), ``attention``
            (attention modules now on the packed attention function), ``router`` (MoE expert
            modules now dispatching through a packed routing mask).
        skipped: (where, why) for everything a user might expect packed but is not.
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

    originals: dict[str, nn.Module]  # module path -> the module that was there before
    attn_before: dict[str, str | None] | None  # None: attention was not switched
    experts_before: dict[str, str | None] | None
    skipped: list[tuple[str, str]]
    configs: list[tuple[Any, str, Any]] = field(default_factory=list)  # (owner, attribute, original config)
    hooks: list[RemovableHandle] = field(default_factory=list)
    functional: int = 0  # modules whose functional dropout calls are routed
    checkpointed: list[nn.Module] = field(default_factory=list)  # attention modules recomputed in backward


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
        sampler: ``"exact"`` (nn.Dropout's random numbers) or ``"fast"`` (dropout modules only).
        flash: let attention delegate to flash-attn where it can run (CUDA, fp16/bf16, no mask).

    Returns:
        A `PatchReport`; ``print`` it to see what was packed and what was not, and why.

    Example:
        >>> report = patch_model(model, bits=1)
        >>> report.replaced
        {'dropout': 38, 'functional_dropout': 0, 'attention': 12, 'router': 0}
        >>> unpatch_model(model)   # back to the original modules and attention implementation
    """
    options = MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler)
    model = _unwrap(model)
    unpatch_model(model)
    state = _PatchState({}, None, None, [])
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
        for handle in state.hooks:
            handle.remove()
        for owner, attr, config in state.configs:  # the original config objects, never modified
            setattr(owner, attr, config)
        for module in state.checkpointed:
            del module.forward  # the instance attribute set by _checkpoint_attentions
    return report(model)


def report(model: nn.Module) -> PatchReport:
    """What is packed in `model` now (counted from the model itself) and what was skipped and why."""
    model = _unwrap(model)
    state: _PatchState | None = model.__dict__.get(_STATE)
    out = PatchReport(skipped=list(state.skipped) if state else [])
    out.replaced["dropout"] = sum(isinstance(m, PackedDropout) for m in model.modules())
    out.replaced["functional_dropout"] = state.functional if state else 0
    if state is not None and state.attn_before is not None:
        out.attn_implementation = model.config._attn_implementation
        out.replaced["attention"] = sum(_dispatches(type(m), "ALL_ATTENTION_FUNCTIONS") for m in model.modules())
    out.replaced["attention"] += len(state.checkpointed) if state else 0
    if state is not None and state.experts_before is not None:
        out.experts_implementation = model.config._experts_implementation
        out.replaced["router"] = sum(_is_experts(m) for m in model.modules())
    return out


# ---- the three kinds ----------------------------------------------------------------------------
def _swap_dropouts(model: nn.Module, options: MaskStorage, state: _PatchState) -> None:
    replacements: dict[int, nn.Module] = {}  # one replacement per module, even if registered twice
    for path, module in list(model.named_modules(remove_duplicate=False)):
        if type(module) is nn.Dropout:
            if id(module) not in replacements:
                new = PackedDropout(
                    module.p, module.inplace, bits=options.bits, unpack=options.unpack,
                    storage=options.storage, sampler=options.sampler,
                )
                replacements[id(module)] = new.train(module.training)
            state.originals[path] = module
            model.set_submodule(path, replacements[id(module)])
        elif isinstance(module, nn.modules.dropout._DropoutNd) and not isinstance(module, PackedDropout):
            state.skipped.append(
                (path, f"{type(module).__name__} is not nn.Dropout (it draws a different mask); left as is")
            )


def _route_functional_dropouts(model: nn.Module, options: MaskStorage, state: _PatchState) -> None:
    """Route F.dropout calls while the model runs, if any module's code makes them (no mode otherwise:
    a TorchFunctionMode sees every torch call, which costs Python time per op)."""
    from .functional_dropout import route_functional_dropout

    state.functional = sum(_calls_functional_dropout(type(m)) for m in model.modules())
    if state.functional:
        state.hooks = route_functional_dropout(model, options)


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
            ("attention", f"attention stays on {used}: packed attention reproduces only one of {REFERENCES}"
             " for the whole model; set_attn_implementation('sdpa') before patching to pack it")
        )
        return
    reference = used[0]
    attention = [m for m in model.modules() if _dispatches(type(m), "ALL_ATTENTION_FUNCTIONS")]
    if reference == "eager" and any(eager_function(m) is None for m in attention):
        state.skipped.append(("attention", "its attention modules' modeling file has no eager_attention_forward"))
        return
    name = register_attention(options, flash=flash, reference=reference)
    model.set_attn_implementation(name)
    if model.config._attn_implementation != name:
        _checkpoint_attentions(model, state)
        return
    state.attn_before = before


def _checkpoint_attentions(model: nn.Module, state: _PatchState) -> None:
    """For attention that does not dispatch through AttentionInterface (MPNet-style: softmax and a
    dropout module in its own forward): run each such module under a non-reentrant checkpoint that
    preserves the RNG state, so nothing inside is kept and backward recomputes it, drawing the same
    dropout mask again: the module's own ops, bit-identical. Modules that touch a kv cache are left
    alone (a recompute would update the cache twice)."""
    from torch.utils.checkpoint import checkpoint

    def wrap(forward):
        def run(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
        return run

    for module in model.modules():
        text = _source(type(module))
        if "Attention" in type(module).__name__ and "softmax(" in text and "dropout(" in text \
                and "cache" not in text.lower() and "past_key_value" not in text:
            module.forward = wrap(module.forward)
            state.checkpointed.append(module)
    reason = (f"{type(model).__name__}'s attention does not dispatch through transformers' AttentionInterface;"
              f" {len(state.checkpointed)} attention modules are recomputed in backward instead (checkpointed,"
              " the dropout mask redrawn from the saved RNG state)")
    if not state.checkpointed:
        reason = f"{type(model).__name__} cannot switch its attention implementation (no AttentionInterface)"
    state.skipped.append(("attention", reason))


def _switch_experts(model: nn.Module, options: MaskStorage, state: _PatchState) -> None:
    experts = [m for m in model.modules() if _is_experts(m)]
    if experts and not hasattr(model, "set_experts_implementation"):
        state.skipped.append(("router", f"{type(model).__name__} is not a transformers PreTrainedModel"))
        return
    if not experts:
        moe_like = sorted({type(m).__name__ for m in model.modules() if "experts" in type(m).__name__.lower()})
        if moe_like:
            state.skipped.append(
                ("router", f"{moe_like} do not dispatch through transformers' ExpertsInterface")
            )
        return
    from .hf_moe import register_experts

    before = model.get_experts_implementation()
    name = register_experts(options)
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
    return hasattr(module, "has_gate") and hasattr(type(module).forward, "__wrapped__") and hasattr(
        module, "config"
    )


@cache
def _source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def _dispatches(cls: type, registry: str) -> bool:
    """Whether `cls`'s code looks its function up in a transformers registry (as transformers checks)."""
    return f"{registry}.get_interface(" in _source(cls)


_FUNCTIONAL_DROPOUT = re.compile(r"(functional|\bF|\btorch)\.dropout_?\(")


def _calls_functional_dropout(cls: type) -> bool:
    """Whether `cls`'s code calls F.dropout / torch.dropout (what `functional_dropout` routes)."""
    return not cls.__module__.startswith("torch.") and bool(_FUNCTIONAL_DROPOUT.search(_source(cls)))
