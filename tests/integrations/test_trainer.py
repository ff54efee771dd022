"""transformers.Trainer trains a patched model with no other change."""

from __future__ import annotations

from pathlib import Path

import pytest

from integrations.huggingface import patch_model

from .tiny_models import ARCHS

pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

from transformers import Trainer, TrainingArguments  # noqa: E402

STEPS = 3


def _trainer_losses(patched: bool, output_dir: Path) -> list[float]:
    arch = ARCHS["bert"]
    model = arch.model(attn_implementation="eager")
    if patched:
        patch_model(model)
    rows = [{k: v[0] for k, v in arch.inputs(batch=1, seq=16, seed=i).items()} for i in range(4 * STEPS)]
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def test_trainer_trains_a_patched_model(tmp_path: Path) -> None:
    patched = _trainer_losses(True, tmp_path / "patched")
    assert len(patched) == STEPS
    assert patched == _trainer_losses(False, tmp_path / "eager")  # same seed, same masks, same losses
