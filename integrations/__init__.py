"""Adapters to other libraries, imported on demand.

``import integrations`` is cheap: it imports neither transformers nor the packed layers; the
names below load their module on first use.

- `patch_model`, `unpatch_model`, `report`, `PatchReport` (Hugging Face transformers models):
  `integrations.huggingface`, which runs one patch kind per file (`patch_dropout`,
  `patch_functional_dropout`, `patch_attention`, `patch_experts`, `patch_activations`; their
  protocol in `patch_kind`) on what `hf_detection` finds in the model; the attention / mask /
  experts functions they register live in `integrations.hf_attention` and `integrations.hf_moe`
  (registry names: `integrations.hf_registry`), functional dropout routing in
  `integrations.functional_dropout`, the include / exclude patterns in `integrations.module_filter`.
- `flash_attention`, `can_delegate`: flash-attn delegation, `layers.flash_attn` (a kernel the packed
  attention chooses, so it lives below the layers; named here for users of the integrations).

Example:
    >>> from integrations import patch_model
    >>> print(patch_model(model))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "patch_model": "huggingface",
    "unpatch_model": "huggingface",
    "report": "huggingface",
    "PatchReport": "huggingface",
    "flash_attention": "layers.flash_attn",
    "can_delegate": "layers.flash_attn",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'integrations' has no attribute {name!r}")
    module = _EXPORTS[name]  # a dotted name is another package's module
    return getattr(importlib.import_module(module if "." in module else f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
