"""Triton pack / unpack / popcount for CUDA tensors (same signatures and bits as `torch_ref`).

One program handles BLOCK packed bytes as a (BLOCK, per_byte) tile of elements: it reads every
input byte once and writes every output byte once, so the kernels are bandwidth-bound.
Empty tensors (nothing to launch) and bits=8 (a byte copy, which torch already does at full
bandwidth) go to the torch reference.

NOTE: Triton chooses between compiling and interpreting when a kernel is decorated, i.e. when this
module is imported. To run these kernels on CPU tensors (tests, no GPU), set TRITON_INTERPRET=1
before the first import. `bittensor_core.kernels` imports this module only for CUDA tensors.

Example::

    >>> mask = torch.rand(4, 13, device="cuda") < 0.5
    >>> packed = pack(mask, 1)                       # uint8 (4, 2)
    >>> torch.equal(unpack(packed, mask.shape, 1), mask)
    True
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import triton
import triton.language as tl

from ..errors import PackedBoolTypeError, PackedBoolValueError
from ..layout import last_dim, packed_shape, per_byte, row_bytes
from . import torch_ref

__all__ = ["byte_tile", "check_runnable", "launch_geometry", "on_device"]

# Elements per program for pack / unpack; bytes per program for popcount.
_ELEMS_PER_PROGRAM = 4096
_POPCOUNT_BLOCK = 4096


def check_runnable(t: torch.Tensor, name: str) -> None:
    """Raise unless Triton can run on `t`: a CUDA tensor, or any CPU tensor under the interpreter."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return
    raise PackedBoolValueError(
        f"{name} is on {t.device}, but the Triton kernels need a CUDA tensor; use "
        "bittensor_core.kernels (it picks the path for each device), or set TRITON_INTERPRET=1 "
        "before importing triton to run them on CPU tensors."
    )


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on t's GPU (Triton launches on the current device), nothing to do on CPU."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


@triton.jit
def byte_tile(n_bytes, cols, row_nbytes, BLOCK: tl.constexpr, K: tl.constexpr, ALIGNED: tl.constexpr):
    """This program's BLOCK packed bytes and the (BLOCK, K) logical elements they hold.

    Returns (byte offsets, byte in range, element offsets, element in range). With ALIGNED
    (rows end on a byte boundary) the tensor is one long row and no division is needed.
    """
    byte = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    byte_ok = byte < n_bytes
    field = tl.arange(0, K)[None, :]
    if ALIGNED:
        elem = byte[:, None] * K + field
        elem_ok = byte_ok[:, None] & (field < K)
    else:
        col = (byte % row_nbytes)[:, None] * K + field
        elem = (byte // row_nbytes)[:, None] * cols + col
        elem_ok = byte_ok[:, None] & (col < cols)
    return byte, byte_ok, elem, elem_ok


@triton.jit
def _pack_kernel(
    mask_ptr,
    out_ptr,
    n_bytes,
    cols,
    row_nbytes,
    BITS: tl.constexpr,
    K: tl.constexpr,
    BLOCK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    byte, byte_ok, elem, elem_ok = byte_tile(n_bytes, cols, row_nbytes, BLOCK, K, ALIGNED)
    bit = (tl.load(mask_ptr + elem, mask=elem_ok, other=0) != 0).to(tl.int32)
    shifts = (tl.arange(0, K) * BITS)[None, :]
    tl.store(out_ptr + byte, tl.sum(bit << shifts, axis=1).to(tl.uint8), mask=byte_ok)


@triton.jit
def _unpack_kernel(
    packed_ptr,
    out_ptr,
    n_bytes,
    cols,
    row_nbytes,
    BITS: tl.constexpr,
    K: tl.constexpr,
    BLOCK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    byte, byte_ok, elem, elem_ok = byte_tile(n_bytes, cols, row_nbytes, BLOCK, K, ALIGNED)
    value = tl.load(packed_ptr + byte, mask=byte_ok, other=0).to(tl.int32)
    shifts = (tl.arange(0, K) * BITS)[None, :]
    tl.store(out_ptr + elem, ((value[:, None] >> shifts) & 1).to(tl.uint8), mask=elem_ok)


@triton.jit
def _popcount_kernel(packed_ptr, partial_ptr, n_bytes, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(packed_ptr + offs, mask=offs < n_bytes, other=0).to(tl.int32)
    x = x - ((x >> 1) & 0x55)  # SWAR bit count of each byte, as in torch_ref
    x = (x & 0x33) + ((x >> 2) & 0x33)
    x = (x + (x >> 4)) & 0x0F
    tl.store(partial_ptr + tl.program_id(0), tl.sum(x, axis=0))


def launch_geometry(shape: torch.Size | tuple[int, ...], bits: int) -> tuple[int, int, int, bool]:
    """(n_bytes, cols, row_nbytes, aligned) describing `shape` packed at `bits` for `byte_tile`.

    When every row ends on a byte boundary the rows are laid end to end without padding, so the
    whole tensor is handled as a single row (aligned) and the kernels skip the per-row division.
    """
    cols, nbytes = last_dim(shape), row_bytes(last_dim(shape), bits)
    n_bytes = nbytes * (torch.Size(shape).numel() // cols if cols else 0)
    aligned = cols * bits % 8 == 0
    return n_bytes, (n_bytes * per_byte(bits) if aligned else cols), nbytes, aligned


def _launch(kernel, src: torch.Tensor, dst: torch.Tensor, shape, bits: int) -> None:
    n_bytes, cols, nbytes, aligned = launch_geometry(shape, bits)
    k = per_byte(bits)
    block = _ELEMS_PER_PROGRAM // k
    with on_device(src):
        kernel[(triton.cdiv(n_bytes, block),)](
            src, dst, n_bytes, cols, nbytes, BITS=bits, K=k, BLOCK=block, ALIGNED=aligned
        )


def pack(mask: torch.Tensor, bits: int) -> torch.Tensor:
    """Bool tensor of any shape -> uint8 `packed_shape(mask.shape, bits)` (see `layout`)."""
    if mask.dtype != torch.bool:
        raise PackedBoolTypeError(f"pack needs a bool mask, got dtype={mask.dtype}; compare first (x > 0).")
    check_runnable(mask, "mask")
    if mask.numel() == 0 or bits == 8:
        return torch_ref.pack(mask, bits)
    out = torch.empty(packed_shape(mask.shape, bits), dtype=torch.uint8, device=mask.device)
    _launch(_pack_kernel, mask.contiguous().view(torch.uint8), out, mask.shape, bits)
    return out


def unpack(packed: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int) -> torch.Tensor:
    """uint8 packed rows -> contiguous bool tensor of logical `shape` (inverse of `pack`)."""
    if packed.dtype != torch.uint8:
        raise PackedBoolTypeError(f"unpack needs uint8 packed storage, got dtype={packed.dtype}.")
    check_runnable(packed, "packed")
    if tuple(packed.shape) != packed_shape(shape, bits):
        raise PackedBoolValueError(
            f"packed has shape {tuple(packed.shape)}, but shape={tuple(shape)} at bits={bits} "
            f"needs {packed_shape(shape, bits)}."
        )
    if bits == 8 or math.prod(shape) == 0:
        return torch_ref.unpack(packed, shape, bits)
    out = torch.empty(shape, dtype=torch.bool, device=packed.device)
    _launch(_unpack_kernel, packed.contiguous(), out.view(torch.uint8), shape, bits)
    return out


def popcount(packed: torch.Tensor) -> torch.Tensor:
    """Number of set bits in `packed` (uint8, any shape), as an int64 0-dim tensor."""
    check_runnable(packed, "packed")
    n = packed.numel()
    if n == 0:
        return torch_ref.popcount(packed)
    partial = torch.empty(triton.cdiv(n, _POPCOUNT_BLOCK), dtype=torch.int32, device=packed.device)
    with on_device(packed):
        _popcount_kernel[(partial.numel(),)](packed.contiguous(), partial, n, BLOCK=_POPCOUNT_BLOCK)
    return partial.sum(dtype=torch.int64)
