"""Shared helpers of the layers tests."""

from __future__ import annotations

import math

import torch

from bittensor_core import SavedTensorCensus

_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (tells -0.0 from 0.0 and compares NaN payloads), same dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = _INT_OF_SIZE[a.element_size()]
    return torch.equal(a.detach().contiguous().view(as_int), b.detach().contiguous().view(as_int))


def saved_bytes(fn, *args, **kwargs) -> tuple[torch.Tensor, SavedTensorCensus]:
    """Run fn under a SavedTensorCensus; return its output and the census."""
    with SavedTensorCensus() as census:
        out = fn(*args, **kwargs)
    return out, census


def packed_bytes(shape: tuple[int, ...], bits: int = 1) -> int:
    """Bytes a PackedBool of `shape` takes: rows of ceil(cols * bits / 8) bytes."""
    return math.prod(shape[:-1]) * math.ceil(shape[-1] * bits / 8)


def leaf(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()
