"""grouped_linear: the same products as torch's _grouped_mm and its autograd formulas, bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from layers.grouped_mm import grouped_linear

COUNTS = [5, 0, 12, 7]  # expert 1 gets no rows


def _inputs(dtype: torch.dtype, transposed: bool, bias: bool):
    gen = torch.Generator().manual_seed(0)
    experts, k, n = len(COUNTS), 16, 24
    x = torch.randn(sum(COUNTS), k, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(
        experts, *((k, n) if transposed else (n, k)), generator=gen, dtype=dtype, requires_grad=True
    )
    b = torch.randn(experts, n, generator=gen, dtype=dtype, requires_grad=True) if bias else None
    offs = torch.tensor(COUNTS).cumsum(0).to(torch.int32)
    return x, w, b, offs


def _grads(out: torch.Tensor, *inputs: torch.Tensor | None) -> list[torch.Tensor]:
    wanted = [t for t in inputs if t is not None]
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return [out, *torch.autograd.grad(out, wanted, grad)]


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_autograd_through_torch_grouped_mm(transposed: bool, bias: bool) -> None:
    x, w, b, offs = _inputs(torch.float32, transposed, bias)
    got = _grads(grouped_linear(x, w, offs, b, is_transposed=transposed), x, w, b)
    # transformers' _grouped_linear: torch's op with its own derivative, then out.add_(bias[sorted ids])
    out = torch._grouped_mm(x, w if transposed else w.transpose(-2, -1), offs=offs)
    if b is not None:
        out = out.add_(b[torch.repeat_interleave(torch.arange(len(COUNTS)), torch.tensor(COUNTS))])
    for a, e in zip(got, _grads(out, x, w, b), strict=True):
        assert torch.equal(a, e)


def test_other_dtypes_run_the_per_expert_loop() -> None:
    """float64 (refused by torch's kernel) runs per-expert mm on slices: F.linear per expert."""
    x, w, b, offs = _inputs(torch.float64, transposed=False, bias=True)
    got = _grads(grouped_linear(x, w, offs, b), x, w, b)
    rows = torch.split(x, COUNTS)
    out = torch.cat([F.linear(r, w[e], b[e]) for e, r in enumerate(rows)])
    for a, e in zip(got, _grads(out, x, w, b), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_compiles_into_one_graph() -> None:
    x, w, b, offs = _inputs(torch.float32, transposed=False, bias=True)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *t: grouped_linear(*t), fullgraph=True, backend="aot_eager")
    for a, e in zip(
        _grads(compiled(x, w, offs, b), x, w, b), _grads(grouped_linear(x, w, offs, b), x, w, b), strict=True
    ):
        assert torch.equal(a, e)
