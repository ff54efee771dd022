"""transformers.Trainer trains a patched model with no other change."""

from __future__ import annotations

from pathlib import Path

import pytest

from integrations.huggingface import patch_model

from .tiny_models import ARCHS, trainer_losses

pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

STEPS = 3


def _trainer_losses(patched: bool, output_dir: Path) -> list[float]:
    model = ARCHS["bert"].model(attn_implementation="eager")
    if patched:
        patch_model(model)
    return trainer_losses(model, str(output_dir), STEPS)


def test_trainer_trains_a_patched_model(tmp_path: Path) -> None:
    patched = _trainer_losses(True, tmp_path / "patched")
    assert len(patched) == STEPS
    assert patched == _trainer_losses(False, tmp_path / "eager")  # same seed, same masks, same losses
