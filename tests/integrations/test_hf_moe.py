"""The packed experts function against transformers' eager experts loop."""

from __future__ import annotations

import pytest
import torch

from bittensor_core import SavedTensorCensus
from layers import MaskStorage, apply_mask

pytest.importorskip("transformers")

from transformers import MixtralConfig  # noqa: E402
from transformers.models.mixtral.modeling_mixtral import MixtralExperts  # noqa: E402

from integrations.hf_moe import (  # noqa: E402
    CombineTokens,
    DispatchTokens,
    GatherSlots,
    packed_experts_forward,
    register_experts,
)

TOKENS, EXPERTS, TOP_K, HIDDEN = 40, 4, 2, 16


def _experts() -> MixtralExperts:
    torch.manual_seed(0)
    config = MixtralConfig(hidden_size=HIDDEN, intermediate_size=24, num_local_experts=EXPERTS)
    config._experts_implementation = "eager"
    experts = MixtralExperts(config)
    for weight in experts.parameters():
        torch.nn.init.normal_(weight, std=0.2)
    return experts


def _routing(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(TOKENS, HIDDEN, generator=gen, requires_grad=True)
    logits = torch.randn(TOKENS, EXPERTS, generator=gen, requires_grad=True)
    weights, index = logits.softmax(-1).topk(TOP_K, dim=-1)
    return hidden, index, weights


def _run(fn, experts: MixtralExperts, hidden, index, weights):
    with SavedTensorCensus() as census:
        out = fn(experts, hidden, index, weights)
    params = list(experts.parameters())
    grads = torch.autograd.grad(out.square().sum(), [hidden, weights, *params])
    return out, grads, census


def test_packed_experts_match_the_eager_loop_and_save_bits_not_indices() -> None:
    experts = _experts()
    eager = type(experts).forward.__wrapped__  # the class's own loop, undecorated
    hidden, index, weights = _routing()
    out_e, grads_e, census_e = _run(eager, experts, hidden, index, weights)
    out_p, grads_p, census_p = _run(packed_experts_forward, experts, hidden, index, weights)
    assert torch.equal(out_e, out_p)  # same rows, same order, same sums
    for a, b in zip(grads_e, grads_p, strict=True):
        assert torch.equal(a, b)
    # Eager keeps two int64 indices per routed (token, slot) pair; packed keeps one bit mask per expert.
    assert census_e.bytes_by_dtype[torch.int64] - census_p.bytes_by_dtype[torch.int64] == 16 * TOKENS * TOP_K
    assert census_p.packed_bytes == index.unique().numel() * TOP_K * -(-TOKENS // 8)
    assert census_p.bytes_by_dtype[torch.bool] == census_p.packed_bytes


def test_expert_parallel_sentinels_are_skipped() -> None:
    """Slot ids == num_experts mean "expert on another rank": they contribute nothing here."""
    experts = _experts()
    hidden, index, weights = _routing()
    sentinel = torch.zeros_like(index, dtype=torch.bool)
    sentinel[::3, 1] = True
    # The eager loop has no sentinels: route those slots to expert 0 with weight 0 instead.
    eager = type(experts).forward.__wrapped__
    with torch.no_grad():
        expected = eager(experts, hidden, index.masked_fill(sentinel, 0), weights.masked_fill(sentinel, 0.0))
        got = packed_experts_forward(experts, hidden, index.masked_fill(sentinel, EXPERTS), weights)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("mask_type, rows", [(DispatchTokens(), 6), (CombineTokens(), 3), (GatherSlots(), 6)])
def test_routing_mask_types_pass_gradcheck(mask_type, rows: int) -> None:
    mask = torch.tensor([[True, False, False, True, False, False], [False, False, True, False, False, False]])
    cols = 2 if isinstance(mask_type, GatherSlots) else 3
    x = torch.randn(rows, cols, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: apply_mask(mask_type, t, mask=mask), (x,))


def test_register_experts_names_by_width() -> None:
    assert register_experts(MaskStorage()) == "packedbool"
    assert register_experts(MaskStorage(bits=2, unpack="cached")) == "packedbool-b2-cached"
    assert register_experts(MaskStorage(storage="seeded")) == "packedbool"  # routing is never sampled
