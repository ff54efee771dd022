"""Per-device kernel choice for pack / unpack / popcount.

CPU eager tensors use numpy (1-bit), CUDA tensors use Triton when it is installed, and every
other case (other widths, other devices, tensors being traced by torch.compile) uses the
pure-torch reference. All paths produce the same bits.
"""

from __future__ import annotations

import importlib.util
import math
from functools import cache
from types import ModuleType

import torch

from ..tracing import tracing
from . import lookup, torch_ref

__all__ = ["pack", "pack_flat", "popcount", "scaled_fields", "triton_available", "unpack", "unpack_flat"]


def _is_eager(t: torch.Tensor) -> bool:
    # FakeTensor / FunctionalTensor are subclasses: numpy and Triton cannot see their data.
    return type(t) is torch.Tensor and not tracing()


@cache
def _numpy_cpu() -> ModuleType:
    from . import numpy_cpu

    return numpy_cpu


@cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


def _backend(t: torch.Tensor, bits: int) -> ModuleType:
    if _is_eager(t):
        if t.device.type == "cpu" and bits == 1:
            return _numpy_cpu()
        if t.device.type == "cuda" and triton_available():
            from . import triton_pack

            return triton_pack
    return torch_ref


def pack(mask: torch.Tensor, bits: int) -> torch.Tensor:
    """Bool tensor (any shape) -> uint8 packed rows, on the fastest path for its device."""
    return _backend(mask, bits).pack(mask.contiguous(), bits)


def unpack(packed: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int) -> torch.Tensor:
    """uint8 packed rows -> contiguous bool tensor of logical `shape`."""
    return _backend(packed, bits).unpack(packed.contiguous(), shape, bits)


def pack_flat(mask: torch.Tensor, bits: int) -> torch.Tensor:
    """Bool tensor (any shape) -> its elements, flattened, packed: 1-D uint8 of ceil(numel * bits / 8)."""
    if not _is_eager(mask):  # no size guard: a compiled graph stays general in the batch size
        return torch_ref.pack_flat(mask.reshape(-1), bits)
    return pack(mask.reshape(-1), bits)


def unpack_flat(flat: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int) -> torch.Tensor:
    """Inverse of `pack_flat`: a contiguous bool tensor of logical `shape`."""
    n = math.prod(shape)
    if not _is_eager(flat):
        return torch_ref.unpack_flat(flat, n, bits).view(shape)
    return unpack(flat, (n,), bits).view(shape)


def scaled_fields(packed: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    """uint8 bytes (any shape) -> (bytes, 8 // bits) of scale's dtype: the value, 0 or `scale`, of each
    field of each byte. A 256-row table lookup in eager mode, pointwise ops while compiling."""
    if not _is_eager(packed):
        return torch_ref.scaled_fields(packed, bits, scale)
    return lookup.scaled_fields(packed, bits, scale)


def popcount(packed: torch.Tensor) -> torch.Tensor:
    """Number of set bits in `packed` (int64 0-dim tensor on the packed tensor's device)."""
    backend = _backend(packed, 1)
    return backend.popcount(packed.contiguous()).to(packed.device)
