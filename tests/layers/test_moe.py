"""TopKRouter and PackedMoE: gradients equal a dense plain-PyTorch MoE; routing kept at 1 bit."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from bittensor_core import PackedBool, PackedBoolValueError
from layers import PackedMoE, TopKRouter

from .helpers import saved_bytes


def dense_reference(moe: PackedMoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by the (mostly zero) top-k weights: plain PyTorch."""
    tokens = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(tokens @ moe.router.gate.weight.t(), -1)
    chosen = torch.zeros_like(probs, dtype=torch.bool).scatter_(
        -1, probs.topk(moe.router.top_k, -1).indices, True
    )
    weights = probs * chosen
    weights = weights / weights.sum(-1, keepdim=True)
    ex = moe.experts

    def expert(e: int) -> torch.Tensor:
        hidden = ex.act_fn(F.linear(tokens, ex.up_proj[e], ex.up_proj_bias[e]))
        return F.linear(hidden, ex.down_proj[e], ex.down_proj_bias[e])

    return sum(weights[:, e : e + 1] * expert(e) for e in range(ex.num_experts)).reshape(x.shape)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize(("experts", "top_k"), [(4, 1), (4, 2), (6, 6)])
def test_gradients_equal_dense_reference(experts: int, top_k: int, dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    moe = PackedMoE(8, 16, experts, top_k).to(dtype)
    x = torch.randn(3, 7, 8, dtype=dtype, requires_grad=True)
    params = [x, *moe.parameters()]
    out, ref = moe(x), dense_reference(moe, x)
    grad = torch.randn_like(out)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    for a, b in zip(
        torch.autograd.grad(out, params, grad), torch.autograd.grad(ref, params, grad), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_router_output() -> None:
    torch.manual_seed(0)
    router = TopKRouter(8, 5, 2)
    routing = router(torch.randn(2, 9, 8))
    assert isinstance(routing.mask, PackedBool) and routing.mask.shape == (18, 5)
    assert torch.equal(routing.mask.unpack().sum(-1), torch.full((18,), 2))
    assert torch.equal(routing.weights != 0, routing.mask.unpack())
    torch.testing.assert_close(routing.weights.sum(-1), torch.ones(18))
    raw = TopKRouter(8, 5, 2, normalize=False)
    raw.load_state_dict(router.state_dict())
    routing_raw = raw(torch.randn(4, 8))
    assert torch.all(routing_raw.weights.sum(-1) < 1)


def test_routing_saves_the_mask_at_one_bit_and_no_index_tensors() -> None:
    torch.manual_seed(0)
    tokens, experts = 256, 8
    moe = PackedMoE(16, 32, experts, 2)
    out, census = saved_bytes(moe, torch.randn(tokens, 16, requires_grad=True))
    # selection, dispatch and combine all save the router's (T, E) PackedBool: one storage
    assert census.packed_bytes == math.ceil(tokens * experts / 8)
    assert torch.int64 not in census.bytes_by_dtype
    out.sum().backward()


@pytest.mark.parametrize("bits", [2, 8])
def test_bits_option(bits: int) -> None:
    torch.manual_seed(0)
    moe = PackedMoE(8, 8, 4, 2, bits=bits)
    _, census = saved_bytes(moe, torch.randn(16, 8, requires_grad=True))
    assert census.packed_bytes == 16 * 4 * bits // 8
    assert moe.last_routing.mask.bits == bits


def test_bad_sizes_raise() -> None:
    with pytest.raises(PackedBoolValueError, match="top_k=5 .*num_experts=4"):
        TopKRouter(8, 4, 5)
    with pytest.raises(PackedBoolValueError, match="top_k=0"):
        PackedMoE(8, 8, 4, 0)
    with pytest.raises(PackedBoolValueError, match="hidden_size=8"):
        TopKRouter(8, 4, 2)(torch.randn(3, 9))
