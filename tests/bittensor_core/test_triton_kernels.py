"""Triton kernels against their plain-torch references, bit for bit.

Without CUDA they run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
conftest.py); with CUDA the same tests run compiled on the GPU. Sizes stay small: the interpreter
executes each program in numpy.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bittensor_core import PackedBool, PackedBoolTypeError, PackedBoolValueError
from bittensor_core.kernels import dropout_ref, torch_ref
from bittensor_core.layout import packed_shape

from .strategies import WIDTHS, masks

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not 1: Triton cannot run here", allow_module_level=True)

if DEVICE == "cpu":
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.randint4x, InterpretedFunction):  # triton's own kernels were compiled-mode
        pytest.fail("triton was imported before TRITON_INTERPRET=1 was set (see conftest.py); run these "
                    "tests with TRITON_INTERPRET=1 in the environment.", pytrace=False)

from bittensor_core.kernels import triton_dropout, triton_pack  # noqa: E402  (after the env check)

pytestmark = pytest.mark.triton
_ROOT = Path(__file__).resolve().parents[2]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Odd last dims, exactly one byte, several programs (4096 elements each), empty and 0-dim.
SHAPES = [(), (1,), (7,), (8,), (3, 13), (2, 3, 16), (5, 1), (2, 4100), (3 * 4096 + 8,), (0,), (4, 0)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _mask(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5).to(DEVICE)


def _randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


def _check_pack(mask: torch.Tensor, bits: int) -> None:
    packed = triton_pack.pack(mask, bits)
    assert torch.equal(packed, torch_ref.pack(mask, bits))
    assert torch.equal(triton_pack.unpack(packed, mask.shape, bits), mask)
    count = triton_pack.popcount(packed)
    assert count.dtype == torch.int64 and count.dim() == 0 and count.device == packed.device
    assert int(count) == int(torch_ref.popcount(packed)) == int(mask.sum())


# ---- pack / unpack / popcount ---------------------------------------------------------------


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pack_unpack_popcount_match_reference(shape: tuple[int, ...], bits: int) -> None:
    _check_pack(_mask(shape), bits)


@settings(max_examples=30, deadline=None)
@given(mask=masks(), bits=st.sampled_from(WIDTHS))
def test_pack_random_masks(mask: torch.Tensor, bits: int) -> None:
    _check_pack(mask.to(DEVICE), bits)


def test_pack_non_contiguous_mask() -> None:
    mask = _mask((13, 6)).t()
    assert torch.equal(triton_pack.pack(mask, 1), torch_ref.pack(mask.contiguous(), 1))


def test_popcount_counts_every_bit_of_any_bytes() -> None:
    data = torch.randint(0, 256, (2 * 4096 + 5,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    data = data.to(DEVICE)
    assert int(triton_pack.popcount(data)) == int(torch_ref.popcount(data))


def test_pack_errors_name_the_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PackedBoolTypeError, match="float32"):
        triton_pack.pack(torch.zeros(3, device=DEVICE), 1)
    with pytest.raises(PackedBoolValueError, match=r"\(2, 1\)"):
        triton_pack.unpack(torch.zeros(2, 2, dtype=torch.uint8, device=DEVICE), (2, 5), 1)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(PackedBoolValueError, match="CUDA tensor"):
        triton_pack.pack(torch.zeros(3, dtype=torch.bool), 1)


@needs_cuda
@pytest.mark.cuda
def test_cuda_dispatch_uses_triton() -> None:
    from bittensor_core import kernels

    mask = _mask((5, 37))
    assert kernels._backend(mask, 1) is triton_pack
    assert torch.equal(kernels.pack(mask, 1).cpu(), torch_ref.pack(mask.cpu(), 1))
    assert torch.equal(PackedBool(mask).unpack(), mask)


# ---- the dropout reference (plain torch) ----------------------------------------------------

# Random123's known-answer vectors for Philox4x32-10: (counter, key, output).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_reference_philox_known_answers(counter: tuple, key: tuple, expected: tuple) -> None:
    words = tuple(torch.tensor([c], dtype=torch.int64) for c in counter)
    assert dropout_ref.philox4x32_10(words, key)[0].tolist() == list(expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_arithmetic_equals_native_dropout_backward(dtype: torch.dtype) -> None:
    # Given the same mask, the reference computes exactly what aten's native dropout computes.
    x, p = _randn((1000,), dtype, 0).cpu() * 100, 0.3
    keep = dropout_ref.keep_mask(x.shape, p, seed=5)
    native = torch.ops.aten.native_dropout_backward(x, keep, 1 / (1 - p))
    assert torch.equal(dropout_ref.forward(x, torch_ref.pack(keep, 1), p), native)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_reference_mask_statistics(p: float) -> None:
    # 2**18 draws: keep rate, and the rate at each bit position of a byte (each comes from a
    # different Philox output word), within 5 binomial standard deviations.
    n = 2**18
    keep = dropout_ref.keep_mask((n,), p, seed=11).view(-1, 8).double()
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
    x, grad = _randn(shape, dtype, 1), _randn(shape, dtype, 2)
    y, packed = triton_dropout.fused_dropout_forward(x, p, seed=123, offset=6)
    keep = dropout_ref.keep_mask(shape, p, seed=123, offset=6, device=DEVICE)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == packed_shape(shape, 1)
    assert torch.equal(packed, torch_ref.pack(keep, 1))  # the specified Philox stream, padding zero
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y, dropout_ref.forward(x, packed, p))
    assert torch.equal(triton_dropout.fused_dropout_backward(grad, packed, p), dropout_ref.backward(grad, packed, p))
    mask = PackedBool.from_packed(packed, shape)
    assert torch.equal(mask.unpack(), keep)
    if p == 0.0:
        assert bool(keep.all())
    if p == 1.0:
        assert not bool(keep.any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_seeded_backward_draws_the_forward_mask_again(dtype: torch.dtype) -> None:
    x, grad = _randn((5, 21), dtype, 7), _randn((5, 21), dtype, 8)
    _, packed = triton_dropout.fused_dropout_forward(x, 0.2, seed=2**40 + 3, offset=10)
    seeded = triton_dropout.fused_dropout_seeded_backward(grad, 0.2, seed=2**40 + 3, offset=10)
    assert torch.equal(seeded, dropout_ref.backward(grad, packed, 0.2))


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy, inside the interpreter
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_dropout_special_values(dtype: torch.dtype) -> None:
    # inf * 0 = nan where dropped (as native dropout), overflow to inf and rounding near the top.
    big = torch.finfo(dtype).max
    values = [float("inf"), -float("inf"), float("nan"), 0.0, -0.0, big, -big, big / 1.5, 1.0, -3.25]
    x = torch.tensor(values * 8, dtype=dtype, device=DEVICE)
    y, packed = triton_dropout.fused_dropout_forward(x, 0.5, seed=3)
    torch.testing.assert_close(y, dropout_ref.forward(x, packed, 0.5), rtol=0, atol=0, equal_nan=True)
    assert y.isinf().any() and y.isnan().any()


def test_fused_dropout_non_contiguous_input() -> None:
    x = _randn((16, 9), torch.float32, 3).t()
    y, packed = triton_dropout.fused_dropout_forward(x, 0.4, seed=9)
    assert torch.equal(y, dropout_ref.forward(x.contiguous(), packed, 0.4))


@pytest.mark.parametrize("seed", [0, 2**32 + 1, 2**63 + 5, 2**64 - 1])
def test_fused_dropout_seed_words(seed: int) -> None:
    # Both 32-bit halves of the key reach Philox, as in the reference.
    _, packed = triton_dropout.fused_dropout_forward(_randn((64,), torch.float32, 0), 0.5, seed)
    assert torch.equal(packed, torch_ref.pack(dropout_ref.keep_mask((64,), 0.5, seed, device=DEVICE), 1))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fused_dropout_keep_rate(p: float) -> None:
    n = 8192
    x = torch.ones(n, device=DEVICE)
    y, packed = triton_dropout.fused_dropout_forward(x, p, seed=2024)
    kept = int(triton_pack.popcount(packed))
    assert abs(kept / n - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n)
    assert int((y != 0).sum()) == kept  # y is nonzero exactly where the mask keeps


def test_fused_dropout_determinism_per_seed() -> None:
    x = _randn((4, 64), torch.float32, 4)
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
    bench = _load_gpu_bench()
    x = _randn((6, 20), torch.float32, 5).requires_grad_()
    grad = _randn((6, 20), torch.float32, 6)
    y = bench._FusedDropout.apply(x, 0.25, 31)
    y.backward(grad)
    _, packed = triton_dropout.fused_dropout_forward(x.detach(), 0.25, seed=31)
    assert torch.equal(x.grad, dropout_ref.backward(grad, packed, 0.25))


# ---- the compiled (non-interpreted) path ----------------------------------------------------

# Compiles kernel variants ahead of time for an H100 (sm_90) with Triton's bundled ptxas: no GPU
# needed. The interpreter never runs Triton's compiler, so this is what catches compile errors.
_COMPILE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from bittensor_core.kernels import triton_dropout as td, triton_pack as tp

GEO = {"n_bytes": "i64", "cols": "i64", "row_nbytes": "i64"}
def build(fn, sig, const):
    src = ASTSource(fn=fn, signature={**sig, **dict.fromkeys(const, "constexpr")}, constexprs=const)
    triton.compile(src, target=GPUTarget("cuda", 90, 32))
for aligned in (True, False):
    build(tp._pack_kernel, {"mask_ptr": "*u8", "out_ptr": "*u8", **GEO}, dict(BITS=1, K=8, BLOCK=512, ALIGNED=aligned))
    build(tp._unpack_kernel, {"packed_ptr": "*u8", "out_ptr": "*u8", **GEO}, dict(BITS=2, K=4, BLOCK=1024, ALIGNED=aligned))
build(tp._popcount_kernel, {"packed_ptr": "*u8", "partial_ptr": "*i32", "n_bytes": "i64"}, dict(BLOCK=4096))
for dt, aligned in (("fp32", True), ("bf16", False)):
    build(td._dropout_fwd_kernel, {"x_ptr": "*" + dt, "y_ptr": "*" + dt, "mask_ptr": "*u8", **GEO, "seed": "u64",
          "offset": "i64", "threshold": "i64", "scale": "fp32"}, dict(BLOCK=128, ALIGNED=aligned, WRITE_MASK=aligned))
    build(td._dropout_bwd_kernel, {"grad_ptr": "*" + dt, "mask_ptr": "*u8", "out_ptr": "*" + dt, **GEO,
          "scale": "fp32"}, dict(BLOCK=128, ALIGNED=aligned))
print("compiled")
"""


@pytest.mark.slow
@pytest.mark.skipif(DEVICE == "cuda", reason="with CUDA the other tests compile and run the kernels")
@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None, reason="no NVIDIA backend")
def test_kernels_compile_for_sm90(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1", "PYTHONPATH": str(_ROOT)}
    done = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


# ---- the GPU benchmark script ---------------------------------------------------------------


def _load_gpu_bench():
    path = _ROOT / "benchmarks" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(DEVICE != "cpu", reason="smoke mode is the CPU interpreter run")
def test_gpu_bench_smoke_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load_gpu_bench().main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "| pack 1-bit |" in out and "| float32 | 1,024 | fwd+bwd (autograd) |" in out


@needs_cuda
@pytest.mark.cuda
def test_gpu_bench_runs_on_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--pack-numel", "65536", "--dropout-numel", "65536", "--rep-ms", "5"]
    assert _load_gpu_bench().main(args) == 0
    assert "of copy bandwidth" in capsys.readouterr().out
