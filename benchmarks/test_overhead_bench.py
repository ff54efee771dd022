"""No cost at any size: a patched model's training step and eval ``generate()`` against stock.

Each case builds one model, a deep copy of it patched with ``patch_model`` (same weights), and runs the
two round-robin in one process (`benchmarks.kit.interleave`); the variant's row carries the median
per-round time ratio patched / stock ("i" in the summary) and its target (issue 23):

- training step (forward, backward, AdamW), target <= 1.05x at every size: tiny, the study's ViT
  (`benchmarks.kit.tiny_vit`, hidden 64) at batch 32; small, TinyBERT-4L-312H at batch 32, seq 64;
- eval ``generate()`` (greedy, 32 new tokens from two 12-token prompts, one left-padded), target
  <= 1.0x: a tiny GPT-2 and a tiny Llama (hidden 64, 2 layers). Eval must take the stock path.

Under ``--benchmark-disable`` each case runs one round, as a test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from benchmarks.kit.interleave import round_robin
from benchmarks.kit.tiny_bert import tiny_bert
from benchmarks.kit.tiny_vit import VIT, tiny_vit
from benchmarks.kit.training import random_batch, train_step
from benchmarks.summary import NATIVE, record_interleaved

STEP_TARGET, EVAL_TARGET = 1.05, 1.0
BATCH, SEQ_LEN, NEW_TOKENS = 32, 64, 32


def _vit_batch(batch_size: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    size = VIT["image_size"]
    return {
        "pixel_values": torch.rand(batch_size, VIT["num_channels"], size, size, generator=gen),
        "labels": torch.randint(0, VIT["num_labels"], (batch_size,), generator=gen),
    }


STEP_CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[nn.Module, int], dict], int]] = {
    # name: (model, batch of a given size, timed rounds)
    "tiny: ViT-4L-64H digits b32": (tiny_vit, lambda model, b: _vit_batch(b), 41),
    f"small: TinyBERT-4L-312H b32 s{SEQ_LEN}": (
        tiny_bert,
        lambda model, b: random_batch(model.config.vocab_size, b, SEQ_LEN),
        15,
    ),
}


def _pair(model: nn.Module) -> dict[str, nn.Module]:
    from integrations.huggingface import patch_model

    patched = copy.deepcopy(model)
    report = patch_model(patched)
    assert report.replaced["dropout"] + report.replaced["attention"] > 0, str(report)
    return {NATIVE: model, "patched": patched}


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_step_interleaved(benchmark, case: str) -> None:
    pytest.importorskip("transformers")
    build, make_batch, rounds = STEP_CASES[case]
    models = _pair(build())
    batch = make_batch(models[NATIVE], BATCH if benchmark.enabled else 2)
    steps = {}
    for name, model in models.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        train_step(model, optimizer, batch)  # creates the optimizer state: later steps are steady-state
        steps[name] = lambda model=model, optimizer=optimizer: train_step(model, optimizer, batch)
    times = round_robin(steps, rounds if benchmark.enabled else 1)
    benchmark.group = f"training step, interleaved: {case} cpu"
    record_interleaved(benchmark, times, "patched", target=STEP_TARGET)
    benchmark.pedantic(steps["patched"], rounds=1, iterations=1)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4, pad_token_id=0)
    return GPT2LMHeadModel(config)


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attention_dropout=0.1,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


GENERATORS = {"GPT-2-2L-64H": _gpt2, "Llama-2L-64H": _llama}


def _prompts() -> dict[str, torch.Tensor]:
    """Two prompts of 12 tokens, the first left-padded by 3: generation builds a padding mask."""
    input_ids = torch.randint(1, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    input_ids[0, :3], attention_mask[0, :3] = 0, 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generate_interleaved(benchmark, name: str) -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    models = _pair(GENERATORS[name]().eval())
    prompts = _prompts()
    new_tokens = NEW_TOKENS if benchmark.enabled else 4

    def generate(model: nn.Module) -> torch.Tensor:
        return model.generate(**prompts, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    outputs = {name: generate(model) for name, model in models.items()}
    assert torch.equal(outputs[NATIVE], outputs["patched"])  # eval: the stock path, the same tokens
    steps = {name: (lambda model=model: generate(model)) for name, model in models.items()}
    times = round_robin(steps, 21 if benchmark.enabled else 1)
    benchmark.group = f"eval generate(), interleaved: {name} {new_tokens} tokens cpu"
    record_interleaved(benchmark, times, "patched", target=EVAL_TARGET)
    benchmark.pedantic(steps["patched"], rounds=1, iterations=1)
