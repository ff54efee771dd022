"""The parameters of the fused Triton dropout: seed, Philox counters, keep threshold, scale, dtypes.

Plain Python and torch (no Triton), so `layers.fused_dropout` can decide and draw without
importing Triton. The stream itself is specified in `layers.kernels.triton_dropout` (NOTE(philox)).
"""

from __future__ import annotations

import math

import torch

from bittensor_core import packed_shape
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError

from ..options import check_p

__all__ = ["draw_seed"]

FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_seed(seed: int, offset: int = 0) -> None:
    if not (isinstance(seed, int) and 0 <= seed < 2**64):
        raise PackedBoolValueError(f"seed={seed!r} must be an int in [0, 2**64); draw one with draw_seed().")
    if not (isinstance(offset, int) and 0 <= offset < 2**62):
        raise PackedBoolValueError(f"offset={offset!r} must be an int in [0, 2**62).")


def check_dtype(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FUSED_DTYPES:
        raise PackedBoolTypeError(
            f"{name} has dtype={t.dtype}; the fused dropout supports {FUSED_DTYPES}. "
            "Use torch.nn.functional.dropout for other dtypes."
        )


def dropout_scale(p: float) -> float:
    """1 / (1 - p) rounded to float32 (0 when p == 1), the factor the fused kernels multiply by."""
    p = check_p(p)
    return 0.0 if p == 1.0 else float(torch.tensor(1.0 / (1.0 - p), dtype=torch.float32))


def keep_threshold(p: float) -> int:
    """Keep an element when its uint32 Philox draw is >= this: P(keep) = 1 - p to within 2**-33."""
    return round(check_p(p) * 2**32)


def philox_counters(shape: torch.Size | tuple[int, ...]) -> int:
    """Philox counters one call consumes for a tensor of `shape`; the next call's offset += this."""
    return 2 * math.prod(packed_shape(shape, 1))


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A fresh seed from torch's CPU generator, so `torch.manual_seed` makes runs repeatable."""
    return int(torch.randint(0, 2**63 - 1, (), generator=generator))
