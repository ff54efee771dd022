"""Where the Triton kernel tests run, and the GPU benchmark script they smoke-test.

Import this at the top of a Triton test module: it skips the module when Triton cannot run here
and fails it when triton was imported before TRITON_INTERPRET=1 was set (see conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not 1: Triton cannot run here", allow_module_level=True)

if DEVICE == "cpu":
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.randint4x, InterpretedFunction):  # triton's own kernels were compiled-mode
        pytest.fail(
            "triton was imported before TRITON_INTERPRET=1 was set (see conftest.py); run these "
            "tests with TRITON_INTERPRET=1 in the environment.",
            pytrace=False,
        )

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


def load_gpu_bench() -> ModuleType:
    """benchmarks/gpu_bench.py as a module (it is a script, not a package member)."""
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
