"""The packed experts function against transformers' grouped_mm experts (its default implementation)."""

from __future__ import annotations

import pytest
import torch

from bittensor_core import SavedTensorCensus
from layers import MaskStorage, apply_mask
from layers.moe import CombineMask, DispatchMask, ExpertBits

pytest.importorskip("transformers")

from transformers.integrations.moe import grouped_mm_experts_forward  # noqa: E402

from integrations.hf_moe import packed_experts_forward, register_experts  # noqa: E402

TOKENS, EXPERTS, TOP_K, HIDDEN = 40, 4, 2, 16


def _experts(kind: str = "mixtral") -> torch.nn.Module:
    """A tiny experts module: Mixtral (gated), GPT-OSS (transposed, biases, own gate), NemotronH (no gate)."""
    import transformers

    config_cls, module = {
        "mixtral": ("MixtralConfig", "mixtral.modeling_mixtral.MixtralExperts"),
        "gpt_oss": ("GptOssConfig", "gpt_oss.modeling_gpt_oss.GptOssExperts"),
        "nemotron_h": ("NemotronHConfig", "nemotron_h.modeling_nemotron_h.NemotronHExperts"),
    }[kind]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(
        hidden_size=HIDDEN,
        intermediate_size=24,
        moe_intermediate_size=24,
        num_local_experts=EXPERTS,
        n_routed_experts=EXPERTS,
    )
    path, cls = module.rsplit(".", 1)
    experts = getattr(__import__(f"transformers.models.{path}", fromlist=[cls]), cls)(config)
    for weight in experts.parameters():
        torch.nn.init.normal_(weight, std=0.2)
    return experts


def _run(fn, experts: torch.nn.Module, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(TOKENS, HIDDEN, generator=gen, requires_grad=True)
    logits = torch.randn(TOKENS, EXPERTS, generator=gen, requires_grad=True)
    weights, index = logits.softmax(-1).topk(TOP_K, dim=-1)
    with SavedTensorCensus() as census:
        out = fn(experts, hidden, index, weights)
    grads = torch.autograd.grad(out.square().sum(), [hidden, logits, *experts.parameters()])
    return out, grads, census


@pytest.mark.parametrize("kind", ["mixtral", "gpt_oss", "nemotron_h"])
def test_packed_experts_equal_grouped_mm_and_save_bits_not_indices(kind: str) -> None:
    experts = _experts(kind)
    out_s, grads_s, census_s = _run(grouped_mm_experts_forward, experts)
    out_p, grads_p, census_p = _run(packed_experts_forward, experts)
    assert torch.equal(out_s, out_p)  # same ops, same order
    for a, b in zip(grads_s, grads_p, strict=True):
        assert torch.equal(a, b)
    # Stock keeps 3 int64 per routed pair (token of each sorted row, order, inverse; + sorted ids
    # for biases); packed keeps the expert ids at bit_length(E) = 3 bits, a byte per token here.
    assert census_s.bytes_by_dtype[torch.int64] >= 24 * TOKENS * TOP_K
    assert torch.int64 not in census_p.bytes_by_dtype
    assert census_p.packed_bytes == census_p.bytes_by_dtype[torch.bool] == TOKENS
    floats = census_s.bytes_by_dtype[torch.float32] - census_p.bytes_by_dtype[torch.float32]
    assert floats == 0


def test_expert_parallel_sentinels_add_nothing() -> None:
    """Slot ids == num_experts mean "expert on another rank": they contribute nothing here."""
    experts = _experts()
    experts._is_expert_parallel = True  # transformers masks sentinel rows only then (always before 5.2x)
    gen = torch.Generator().manual_seed(3)
    hidden, logits = torch.randn(TOKENS, HIDDEN, generator=gen), torch.randn(TOKENS, EXPERTS, generator=gen)
    weights, index = logits.softmax(-1).topk(TOP_K, dim=-1)
    sentinel = torch.zeros_like(index, dtype=torch.bool)
    sentinel[::3, 1] = True
    index, weights = index.masked_fill(sentinel, EXPERTS), weights.masked_fill(sentinel, 0.0)
    with torch.no_grad():
        expected = grouped_mm_experts_forward(experts, hidden, index, weights)
        got = packed_experts_forward(experts, hidden, index, weights)
    assert torch.equal(got, expected)


def test_expert_bits_round_trip_and_sentinels() -> None:
    code = ExpertBits(num_experts=5, top_k=3)  # ids 0..5 in 3 bits, 9 bits per token: 2 bytes
    ids = torch.tensor([[0, 4, 2], [1, 3, 7]])
    mask = code.encode(ids)
    assert mask.shape == (2, 16) and not mask[:, 9:].any()
    assert torch.equal(code.experts(mask), ids.clamp(max=5))


@pytest.mark.parametrize("mask_type, shapes", [(DispatchMask, [(3, 2)]), (CombineMask, [(6, 2), (3, 2)])])
def test_routing_mask_types_pass_gradcheck(mask_type, shapes) -> None:
    code = ExpertBits(num_experts=3, top_k=2)
    mask = code.encode(torch.tensor([[2, 0], [1, 2], [0, 3]]))  # 3: no expert (sorted last)
    inputs = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(lambda *t: apply_mask(mask_type(code), *t, mask=mask), inputs)


def test_register_experts_names_by_width() -> None:
    assert register_experts(MaskStorage()) == "packedbool"
    assert register_experts(MaskStorage(bits=2, unpack="cached")) == "packedbool-b2-cached"
    assert register_experts(MaskStorage(storage="seeded")) == "packedbool"  # routing is never sampled
