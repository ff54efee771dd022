"""Triton pack / unpack / popcount against the plain-torch reference, bit for bit (the fused dropout
kernels: tests/layers/test_triton_dropout.py).

Without CUDA they run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
conftest.py); with CUDA the same tests run compiled on the GPU. Sizes stay small: the interpreter
executes each program in numpy.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bittensor_core import PackedBool, PackedBoolTypeError, PackedBoolValueError
from bittensor_core.kernels import torch_ref

from ..triton_env import DEVICE, ROOT, load_gpu_bench, needs_cuda  # skips the module without Triton
from .strategies import WIDTHS, masks

pytestmark = pytest.mark.triton

from bittensor_core.kernels import triton_pack  # noqa: E402  (after triton_env's checks)

# Odd last dims, exactly one byte, several programs (4096 elements each), empty and 0-dim.
SHAPES = [(), (1,), (7,), (8,), (3, 13), (2, 3, 16), (5, 1), (2, 4100), (3 * 4096 + 8,), (0,), (4, 0)]


def _mask(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5).to(DEVICE)


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
    data = torch.randint(
        0, 256, (2 * 4096 + 5,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
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


# ---- the compiled (non-interpreted) path ----------------------------------------------------

# Compiles kernel variants ahead of time for an H100 (sm_90) with Triton's bundled ptxas: no GPU
# needed. The interpreter never runs Triton's compiler, so this is what catches compile errors.
_COMPILE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from bittensor_core.kernels import triton_pack as tp
from layers.kernels import triton_dropout as td

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
    env |= {"TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


# ---- the GPU benchmark script ---------------------------------------------------------------


@pytest.mark.skipif(DEVICE != "cpu", reason="smoke mode is the CPU interpreter run")
def test_gpu_bench_smoke_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_gpu_bench().main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "| pack 1-bit |" in out and "| float32 | 1,024 | fwd+bwd (autograd) |" in out


@needs_cuda
@pytest.mark.cuda
def test_gpu_bench_runs_on_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--pack-numel", "65536", "--dropout-numel", "65536", "--rep-ms", "5"]
    assert load_gpu_bench().main(args) == 0
    assert "of copy bandwidth" in capsys.readouterr().out
