"""The fused Triton dropout kernels against the plain-torch oracle, bit for bit.

Without CUDA they run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
conftest.py); with CUDA the same tests run compiled on the GPU. Sizes stay small: the interpreter
executes each program in numpy.
"""

from __future__ import annotations

import math

import pytest
import torch

from bittensor_core import PackedBool, PackedBoolTypeError, PackedBoolValueError, packed_shape
from bittensor_core.kernels import torch_ref

from ..triton_env import DEVICE, load_gpu_bench, randn
from . import dropout_oracle as oracle

pytestmark = pytest.mark.triton

from bittensor_core.kernels import triton_pack  # noqa: E402  (after triton_env's checks)
from layers.kernels import triton_dropout  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


# ---- the dropout reference (plain torch) ----------------------------------------------------

# Random123's known-answer vectors for Philox4x32-10: (counter, key, output).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_reference_philox_known_answers(counter: tuple, key: tuple, expected: tuple) -> None:
    words = tuple(torch.tensor([c], dtype=torch.int64) for c in counter)
    assert oracle.philox4x32_10(words, key)[0].tolist() == list(expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_arithmetic_equals_native_dropout_backward(dtype: torch.dtype) -> None:
    # Given the same mask, the reference computes exactly what aten's native dropout computes.
    x, p = randn((1000,), dtype, 0).cpu() * 100, 0.3
    keep = oracle.keep_mask(x.shape, p, seed=5)
    native = torch.ops.aten.native_dropout_backward(x, keep, 1 / (1 - p))
    assert torch.equal(oracle.forward(x, torch_ref.pack(keep, 1), p), native)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_reference_mask_statistics(p: float) -> None:
    # 2**18 draws: keep rate, and the rate at each bit position of a byte (each comes from a
    # different Philox output word), within 5 binomial standard deviations.
    n = 2**18
    keep = oracle.keep_mask((n,), p, seed=11).view(-1, 8).double()
    assert abs(keep.mean().item() - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n)
    per_bit = keep.mean(0)
    assert (per_bit - (1 - p)).abs().max().item() <= 5 * math.sqrt(p * (1 - p) / (n / 8))
    lag1 = torch.corrcoef(torch.stack((keep.flatten()[:-1], keep.flatten()[1:])))[0, 1].item()
    assert abs(lag1) <= 5 / math.sqrt(n)


# ---- fused dropout: forward / backward ------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (7,), (3, 13), (2, 3, 16), (1030,), (4, 0)], ids=str)
def test_fused_dropout_matches_reference(shape: tuple[int, ...], dtype: torch.dtype, p: float) -> None:
    x, grad = randn(shape, dtype, 1), randn(shape, dtype, 2)
    y, packed = triton_dropout.fused_dropout_forward(x, p, seed=123, offset=6)
    keep = oracle.keep_mask(shape, p, seed=123, offset=6, device=DEVICE)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == packed_shape(shape, 1)
    assert torch.equal(packed, torch_ref.pack(keep, 1))  # the specified Philox stream, padding zero
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y, oracle.forward(x, packed, p))
    assert torch.equal(
        triton_dropout.fused_dropout_backward(grad, packed, p), oracle.backward(grad, packed, p)
    )
    mask = PackedBool.from_packed(packed, shape)
    assert torch.equal(mask.unpack(), keep)
    if p == 0.0:
        assert bool(keep.all())
    if p == 1.0:
        assert not bool(keep.any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_seeded_backward_draws_the_forward_mask_again(dtype: torch.dtype) -> None:
    x, grad = randn((5, 21), dtype, 7), randn((5, 21), dtype, 8)
    _, packed = triton_dropout.fused_dropout_forward(x, 0.2, seed=2**40 + 3, offset=10)
    seeded = triton_dropout.fused_dropout_seeded_backward(grad, 0.2, seed=2**40 + 3, offset=10)
    assert torch.equal(seeded, oracle.backward(grad, packed, 0.2))


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy, inside the interpreter
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_dropout_special_values(dtype: torch.dtype) -> None:
    # inf * 0 = nan where dropped (as native dropout), overflow to inf and rounding near the top.
    big = torch.finfo(dtype).max
    values = [float("inf"), -float("inf"), float("nan"), 0.0, -0.0, big, -big, big / 1.5, 1.0, -3.25]
    x = torch.tensor(values * 8, dtype=dtype, device=DEVICE)
    y, packed = triton_dropout.fused_dropout_forward(x, 0.5, seed=3)
    torch.testing.assert_close(y, oracle.forward(x, packed, 0.5), rtol=0, atol=0, equal_nan=True)
    assert y.isinf().any() and y.isnan().any()


def test_fused_dropout_non_contiguous_input() -> None:
    x = randn((16, 9), torch.float32, 3).t()
    y, packed = triton_dropout.fused_dropout_forward(x, 0.4, seed=9)
    assert torch.equal(y, oracle.forward(x.contiguous(), packed, 0.4))


@pytest.mark.parametrize("seed", [0, 2**32 + 1, 2**63 + 5, 2**64 - 1])
def test_fused_dropout_seed_words(seed: int) -> None:
    # Both 32-bit halves of the key reach Philox, as in the reference.
    _, packed = triton_dropout.fused_dropout_forward(randn((64,), torch.float32, 0), 0.5, seed)
    assert torch.equal(packed, torch_ref.pack(oracle.keep_mask((64,), 0.5, seed, device=DEVICE), 1))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fused_dropout_keep_rate(p: float) -> None:
    n = 8192
    x = torch.ones(n, device=DEVICE)
    y, packed = triton_dropout.fused_dropout_forward(x, p, seed=2024)
    kept = int(triton_pack.popcount(packed))
    assert abs(kept / n - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n)
    assert int((y != 0).sum()) == kept  # y is nonzero exactly where the mask keeps


def test_fused_dropout_determinism_per_seed() -> None:
    x = randn((4, 64), torch.float32, 4)
    y1, m1 = triton_dropout.fused_dropout_forward(x, 0.5, seed=77)
    y2, m2 = triton_dropout.fused_dropout_forward(x, 0.5, seed=77)
    assert torch.equal(m1, m2) and torch.equal(y1, y2)
    assert not torch.equal(triton_dropout.fused_dropout_forward(x, 0.5, seed=78)[1], m1)
    assert not torch.equal(triton_dropout.fused_dropout_forward(x, 0.5, seed=77, offset=2)[1], m1)
    # Rows ending on a byte boundary: the mask depends only on the flat position, not the shape.
    assert torch.equal(triton_dropout.fused_dropout_forward(x.flatten(), 0.5, seed=77)[1], m1.flatten())
    # Each packed byte takes two Philox counters, so offset 2 shifts the mask by one byte.
    shifted = triton_dropout.fused_dropout_forward(x.flatten()[8:], 0.5, seed=77, offset=2)[1]
    assert torch.equal(shifted, m1.flatten()[1:])


def test_fused_dropout_errors_name_the_bad_value() -> None:
    x = torch.zeros(4, 9, device=DEVICE)
    with pytest.raises(PackedBoolTypeError, match="float64"):
        triton_dropout.fused_dropout_forward(x.double(), 0.1, seed=0)
    with pytest.raises(PackedBoolValueError, match="1.5"):
        triton_dropout.fused_dropout_forward(x, 1.5, seed=0)
    with pytest.raises(PackedBoolValueError, match="seed=-1"):
        triton_dropout.fused_dropout_forward(x, 0.1, seed=-1)
    with pytest.raises(PackedBoolValueError, match=r"\(4, 2\)"):
        triton_dropout.fused_dropout_backward(x, torch.zeros(4, 9, dtype=torch.uint8, device=DEVICE), 0.1)
    with pytest.raises(PackedBoolTypeError, match="int32"):
        triton_dropout.fused_dropout_backward(x, torch.zeros(4, 2, dtype=torch.int32, device=DEVICE), 0.1)


def test_fused_dropout_through_autograd() -> None:
    # The wiring a packed dropout layer uses: only the 1-bit mask is saved for backward.
    bench = load_gpu_bench()
    x = randn((6, 20), torch.float32, 5).requires_grad_()
    grad = randn((6, 20), torch.float32, 6)
    y = bench._FusedDropout.apply(x, 0.25, 31)
    y.backward(grad)
    _, packed = triton_dropout.fused_dropout_forward(x.detach(), 0.25, seed=31)
    assert torch.equal(x.grad, oracle.backward(grad, packed, 0.25))
