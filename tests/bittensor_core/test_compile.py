"""torch.compile traces PackedBool (via __tensor_flatten__) and the compiled code is right."""

from __future__ import annotations

import pytest
import torch

from bittensor_core import PackedBool


def masked_scale(pb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.where(pb, x, -x) * 2 + x.masked_fill(pb, 1.0) + pb.float()


def popcounts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a & b).sum() + (~a).sum() + a[1:].sum()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_function_matches_eager(backend: str) -> None:
    torch._dynamo.reset()
    m, n, x = torch.rand(6, 21) < 0.5, torch.rand(6, 21) < 0.5, torch.randn(6, 21)
    a, b = PackedBool(m), PackedBool(n)
    compiled = torch.compile(masked_scale, backend=backend)
    assert torch.equal(compiled(a, x), masked_scale(m, x))
    compiled_counts = torch.compile(popcounts, backend=backend)
    assert torch.equal(compiled_counts(a, b), popcounts(m, n))


def test_flatten_unflatten_round_trip() -> None:
    pb = PackedBool(torch.rand(3, 9) < 0.5, bits=2, unpack="cached")
    names, meta = pb.__tensor_flatten__()
    rebuilt = PackedBool.__tensor_unflatten__({n: getattr(pb, n) for n in names}, meta, pb.shape, pb.stride())
    assert rebuilt.bits == 2 and rebuilt.unpack_mode == "cached"
    assert torch.equal(rebuilt.unpack(), pb.unpack())
