"""What `patch_model` finds in a model, read from its attributes (never from its source text).

- `unwrap`: the model inside DDP / FSDP / DataParallel / torch.compile / peft wrappers;
- `attention_modules`: the attention classes its transformers submodels declare;
- `is_experts`: an experts module transformers' ``use_experts_implementation`` dispatches;
- `may_call_dropout`: a module whose own code may call F.dropout;
- `implementations`: the attention / experts implementation of a config and its sub-configs;
- `own_config`: a private copy of the model's config, so switching implementations touches no other model.

Example:
    >>> model = unwrap(DistributedDataParallel(bert))   # bert itself
    >>> [path for path, _ in attention_modules(model)][:1]
    ['bert.encoder.layer.0.attention.self']
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from torch import nn

import layers
from bittensor_core.errors import PackedBoolTypeError

# Wrappers whose inner model is patched: attribute holding it, by wrapper type name (DDP, FSDP1,
# DataParallel, torch.compile). Matched by type, so a user's own module with a `.module` is not one.
_WRAPPERS = {
    "DistributedDataParallel": "module",
    "DataParallel": "module",
    "FullyShardedDataParallel": "module",
    "OptimizedModule": "_orig_mod",
}
# packedbool's layers call packed dropout themselves; known by where their code lives, not by a package
# name (a user's own package named `layers` is not ours)
_OURS = Path(layers.__file__).resolve().parent


def unwrap(model: nn.Module) -> nn.Module:
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


def implementations(model: nn.Module, attr: str) -> dict[str, str | None]:
    """``{"": impl, sub_config: impl, ...}``, the form ``set_attn_implementation`` takes back."""
    config = model.config
    out = {"": getattr(config, attr)}
    for key in getattr(config, "sub_configs", {}):
        sub = getattr(config, key, None)
        if sub is not None:
            out[key] = getattr(sub, attr)
    return out


def is_experts(module: nn.Module) -> bool:
    """An experts module whose forward transformers' ``use_experts_implementation`` dispatches."""
    return (
        hasattr(module, "has_gate")
        and hasattr(type(module).forward, "__wrapped__")
        and hasattr(module, "config")
    )


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
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


def may_call_dropout(module: nn.Module) -> bool:
    """Whether `module`'s own code may call F.dropout: a transformers module holding a positive
    dropout probability as a float (``self.dropout = config.dropout``, fed to F.dropout), or code
    from outside torch, transformers, peft and packedbool, which we cannot vouch for."""
    library = type(module).__module__.partition(".")[0]
    if library in ("torch", "peft") or _is_ours(type(module)):
        return False
    if library != "transformers":
        return True
    return any("dropout" in attr and isinstance(v, float) and v > 0 for attr, v in vars(module).items())


def _is_ours(cls: type) -> bool:
    source = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return source is not None and Path(source).resolve().is_relative_to(_OURS)


def own_config(model: nn.Module) -> list[tuple[Any, str, Any]]:
    """Give `model` a private copy of its config (and sub-configs), so that switching its attention /
    experts implementation cannot switch another model sharing the same config object. Returns
    (owner, attribute, original config) for each replaced reference: setting them back undoes it."""
    from transformers import PretrainedConfig

    memo: dict[int, Any] = {}
    copy.deepcopy(model.config, memo)
    replaced = []
    for module in model.modules():
        for attr, value in list(vars(module).items()):
            if isinstance(value, PretrainedConfig) and id(value) in memo:
                replaced.append((module, attr, value))
                setattr(module, attr, memo[id(value)])
    return replaced
