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

from .tiny_models import (
    ARCHS,
    BART,
    Arch,
    _text,
    assert_identical,
    kept_storage_sizes,
    loss_and_grads,
    skip_if_stock_cannot_compile,
    stock_experts,
    train_steps,
)

pytest.importorskip("transformers")

MODELS = {**ARCHS, "bart": BART}


def _pair(arch: Arch, impl: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = stock_experts(arch.model(attn_implementation=impl))
    return reference, copy.deepcopy(reference)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("name", list(MODELS))
def test_training_is_bit_identical_to_the_unpatched_model(name: str, impl: str) -> None:
    arch = MODELS[name]
    reference, patched = _pair(arch, impl)
    result = patch_model(patched)
    assert result.replaced["attention"] > 0 and result.attn_implementation.startswith("packedbool")
    for a, b in zip(train_steps(reference, arch), train_steps(patched, arch), strict=True):
        assert_identical(a, b)
    unpatch_model(patched)
    assert patched.config._attn_implementation == impl


def _largest_kept(model: torch.nn.Module, inputs: dict) -> int:
    return max(kept_storage_sizes(model, inputs), default=0)


@pytest.mark.parametrize(
    "name, impl", [("bert", "sdpa"), ("gpt2", "eager"), ("bart", "sdpa"), ("bart", "eager")]
)
def test_no_score_sized_tensor_wider_than_a_bit_is_kept(name: str, impl: str) -> None:
    """Stock attention keeps float (B, H, S, S) tensors (probs, noise, dropped probs) until backward;
    patched, nothing kept is even a quarter of one (the dropout mask is 1 bit per score)."""
    arch = MODELS[name]
    batch, seq, heads = 1, 256, 4  # logits (B, S, vocab 128) stay under a quarter of the scores
    inputs = arch.inputs(batch=batch, seq=seq)
    reference, patched = _pair(arch, impl)
    patch_model(patched)
    score_floats = batch * heads * seq * seq * 4
    assert _largest_kept(reference, inputs) >= score_floats
    assert _largest_kept(patched, inputs) < score_floats / 4


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_compiled_patched_model_is_one_graph_and_bit_identical(impl: str) -> None:
    """torch.compile(fullgraph=True) of a patched BART (functional dropouts, cross-attention) traces
    with no graph break and trains exactly like the unpatched model run eagerly."""
    reference, patched = _pair(BART, impl)
    patch_model(patched)
    torch._dynamo.reset()
    compiled = torch.compile(patched, fullgraph=True, backend="aot_eager")
    inputs = BART.inputs()
    try:
        loss, grads = loss_and_grads(compiled, inputs)
    except torch._dynamo.exc.Unsupported:
        skip_if_stock_cannot_compile(copy.deepcopy(reference), inputs)
        raise
    assert_identical(
        loss_and_grads(reference, inputs), (loss, {k.removeprefix("_orig_mod."): g for k, g in grads.items()})
    )


def _mpnet():
    from transformers import MPNetConfig, MPNetForMaskedLM

    config = MPNetConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=300,
        pad_token_id=1,
    )
    return MPNetForMaskedLM(config)


MPNET = Arch("mpnet", _mpnet, _text("tokens"))


def test_attention_without_attention_interface_is_recomputed_bit_identically() -> None:
    """MPNet computes softmax and dropout in its own forward; those modules run checkpointed."""
    reference = MPNET.model()
    patched = copy.deepcopy(reference)
    result = patch_model(patched)
    assert result.replaced["attention"] == 2 and "recomputed in backward" in dict(result.skipped)["attention"]
    for a, b in zip(train_steps(reference, MPNET), train_steps(patched, MPNET), strict=True):
        assert_identical(a, b)
    batch, seq, heads = 1, 256, 4
    inputs = MPNET.inputs(batch=batch, seq=seq)
    score_floats = batch * heads * seq * seq * 4
    big = [sum(n >= score_floats / 4 for n in kept_storage_sizes(m, inputs)) for m in (reference, patched)]
    # left: what MPNet builds once per forward and every layer reads (float mask, position buckets,
    # position bias); gone: at least two per layer (of probs, noise, dropped probs)
    assert big[1] <= 3 and big[0] >= big[1] + 2 * 2
    unpatch_model(patched)
    assert not any(a == "forward" for m in patched.modules() for a in vars(m))
