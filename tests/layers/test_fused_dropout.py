"""The fused Triton dropout Function (the CUDA path of sampler="fast"), run under TRITON_INTERPRET."""

from __future__ import annotations

import pytest
import torch

from bittensor_core import SavedTensorCensus
from layers.fused_dropout import FusedDropoutFunction, can_fuse
from layers.kernels.dropout_params import draw_seed
from layers.options import MaskStorage

from . import dropout_oracle as oracle

pytest.importorskip("triton")
pytestmark = pytest.mark.triton


def _run(storage: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int, SavedTensorCensus]:
    torch.manual_seed(3)
    x = torch.randn(6, 37, dtype=dtype, requires_grad=True)
    seed = draw_seed()  # what the Function draws next after re-seeding
    torch.manual_seed(3)
    torch.randn(6, 37, dtype=dtype)
    with SavedTensorCensus() as census:
        y = FusedDropoutFunction.apply(x, 0.3, MaskStorage(storage=storage, sampler="fast"))
    y.backward(torch.ones_like(y))
    return x, y, seed, census


@pytest.mark.parametrize("storage", ["packed", "seeded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_and_gradient_follow_the_philox_mask(storage: str, dtype: torch.dtype) -> None:
    x, y, seed, census = _run(storage, dtype)
    keep = oracle.keep_mask(x.shape, 0.3, seed)
    assert torch.equal(y, oracle.apply_mask(x.detach(), keep, 0.3))
    assert torch.equal(x.grad, oracle.apply_mask(torch.ones_like(x), keep, 0.3))
    expected = 8 if storage == "seeded" else 6 * 5  # an int64 seed, or 6 rows of ceil(37 / 8) bytes
    assert census.total_bytes == expected


def test_deterministic_under_manual_seed() -> None:
    assert torch.equal(_run("packed", torch.float32)[1], _run("packed", torch.float32)[1])


def test_fused_path_is_only_taken_on_cuda() -> None:
    fast = MaskStorage(sampler="fast")
    assert not can_fuse(torch.randn(4), fast, inplace=False)  # CPU uses the numpy Philox sampler


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_dropout_fast_uses_the_fused_kernel_on_cuda() -> None:
    from layers import packed_dropout

    x = torch.randn(64, 1000, device="cuda", requires_grad=True)
    assert can_fuse(x, MaskStorage(sampler="fast"), inplace=False)
    with SavedTensorCensus() as census:
        y = packed_dropout(x, 0.1, sampler="fast")
    assert census.total_bytes == 64 * 125
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
