"""benchmarks.kit.toolbox's checkpointing variants call the installed transformers' names, not deprecated ones."""

from __future__ import annotations

import warnings

import pytest

from benchmarks.kit.toolbox import VARIANTS

from ..integrations.tiny_models import ARCHS

pytest.importorskip("transformers")


@pytest.mark.parametrize("variant", ["checkpointing", "checkpointing+patch"])
def test_checkpointing_variants_raise_no_deprecation_warning(variant: str) -> None:
    """transformers 5.24 warns (FutureWarning, removal in v6) on ``gradient_checkpointing_enable``."""
    from integrations.hf_checkpointing import checkpointing_name

    model = ARCHS["bert"].model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for step in VARIANTS[variant]:
            model = step(model)
    assert getattr(model, f"is_{checkpointing_name()}")
