"""Small real runs of the experiment runner, shared by the tests of its logic.

A tiny BERT (2 layers, hidden 32, random weights, all-MiniLM-L6-v2's real tokenizer) saved as a
local model folder, so exp-1 fine-tunes on the real Rotten Tomatoes sentences and exp-2 measures
real training steps in seconds. Nothing here is invented: every number the tests check comes
from these runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.experiments.exp1 import Exp1Settings, run_exp1
from benchmarks.experiments.exp2 import MIB, Exp2Settings, _systems, run_exp2
from benchmarks.experiments.resume import RunStore
from benchmarks.kit.probes import step_memory
from benchmarks.kit.training import model_from_config, random_batch, train_step


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from benchmarks.kit.sources import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_bert")
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def exp1_small(tiny_model_dir: Path) -> dict[str, Any]:
    return run_exp1(exp1_settings(tiny_model_dir), progress=False)


def exp1_settings(model_dir: Path, **overrides: Any) -> Exp1Settings:
    """Both tasks, 4 steps each, eager baseline attention (what packed attention reproduces)."""
    base = dict(
        model=str(model_dir),
        seq_len=16,
        batch_size=4,
        steps=4,
        warmup=1,
        seeds=(0, 1),
        train_limit=16,
        val_limit=32,
        test_limit=32,
        held_out=0.1,
        lr=1e-3,
        eval_batch=16,
        val_points=2,
        image_batch=8,
        timing_rounds=2,
        timing_steps=2,
        variations=("packed-1bit-lazy", "packed-4bit", "seeded-0bit"),
        baseline_attn="eager",
        device="cpu",
    )
    return Exp1Settings(**(base | overrides))


def exp2_settings(model_dir: Path) -> Exp2Settings:
    """Sizes where activations, not the optimizer step, set the peak of the tiny model; the budget
    is the baseline's measured peak at batch 48, seq 64."""
    torch.manual_seed(0)
    model = model_from_config(str(model_dir), max_positions=512).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    train_step(model, optimizer, random_batch(model.config.vocab_size, 1, 8))
    budget = step_memory(model, optimizer, random_batch(model.config.vocab_size, 48, 64)).peak_bytes
    return Exp2Settings(
        model=str(model_dir),
        seq_lens=(64, 128, 256),
        seq_batch=8,
        batch_sizes=(8, 16, 32),
        batch_seq=64,
        budget_mb=budget / MIB,
        search_seq=64,
        search_batch=4,
        seq_step=16,
        max_batch=256,
        max_seq=512,
        baseline_attn="eager",
        systems=(),
        device="cpu",
    )


@pytest.fixture(scope="session")
def exp2_small(tiny_model_dir: Path) -> dict[str, Any]:
    return run_exp2(exp2_settings(tiny_model_dir), progress=False)


@pytest.fixture(scope="session")
def systems_small() -> dict[str, Any]:
    """exp-2's system comparison on the real all-MiniLM-L6-v2 at batch 2, seq 16: stock, packing,
    bf16 autocast with packing; budget searches capped at batch 2."""
    pytest.importorskip("transformers")
    settings = Exp2Settings(
        systems=("native", "patch", "amp+patch"),
        system_batch=2,
        system_seq=16,
        system_rounds=2,
        system_budget_mb=1024.0,
        system_max_batch=2,
        device="cpu",
    )
    return _systems(settings, RunStore(None), progress=False).as_dict()  # as results.json holds it
