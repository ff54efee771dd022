"""patch_model changes nothing but memory: bit-identical training against the model's own
implementation, for both "eager" and "sdpa", and no (B, H, S, S) float kept for backward.

Each comparison runs the same aten ops on the same layouts on both sides (the patched attention
replays the reference's own ops), so it holds on any CPU, whatever BLAS does.
"""

from __future__ import annotations

import copy

import pytest
import torch

from integrations.huggingface import patch_model, unpatch_model

from .tiny_models import ARCHS, Arch, _text, assert_identical, loss_and_grads

pytest.importorskip("transformers")

STEPS = 3


def _bart():
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    )
    return BartForConditionalGeneration(config)


BART = Arch("bart", _bart, _text("tokens"))
MODELS = {**{n: ARCHS[n] for n in ("bert", "roberta", "distilbert", "gpt2", "vit", "mixtral")}, "bart": BART}


def _train(model: torch.nn.Module, arch: Arch, steps: int = STEPS) -> list[tuple]:
    """`steps` AdamW steps from fixed seeds; (loss, grads) of each step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = []
    for step in range(steps):
        out.append(loss_and_grads(model, arch.inputs(seed=step), seed=100 + step))
        opt.step()
    return out


def _pair(arch: Arch, impl: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = arch.model(attn_implementation=impl)
    if hasattr(reference.config, "_experts_implementation") and reference.config._experts_implementation:
        reference.set_experts_implementation("eager")  # the packed router reproduces eager experts
    return reference, copy.deepcopy(reference)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("name", list(MODELS))
def test_training_is_bit_identical_to_the_unpatched_model(name: str, impl: str) -> None:
    arch = MODELS[name]
    reference, patched = _pair(arch, impl)
    result = patch_model(patched)
    assert result.replaced["attention"] > 0 and result.attn_implementation.startswith("packedbool")
    for a, b in zip(_train(reference, arch), _train(patched, arch), strict=True):
        assert_identical(a, b)
    unpatch_model(patched)
    assert patched.config._attn_implementation == impl
