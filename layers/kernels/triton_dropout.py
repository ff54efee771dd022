"""Fused Triton dropout: one pass draws the keep-mask, writes the output and the 1-bit packed mask;
one pass reads the packed mask and the gradient and writes the input gradient.

Bytes moved per element (fp32): native dropout forward reads 4 and writes 4 + 1 (bool mask),
backward reads 4 + 1 and writes 4; here the mask costs 1/8 byte each way, and no bool tensor is
ever materialised. The packed mask has exactly the layout of `bittensor_core.layout` at bits=1
(padding bits zero), so ``PackedBool.from_packed(packed, x.shape)`` wraps it without a copy.

NOTE(philox): the mask is drawn with Philox4x32-10 (Triton's `tl.randint4x`, four draws per
counter), not torch's generator, so it differs from `torch.native_dropout` for the same torch seed;
it is a pure function of (seed, offset, position). The keep bit of packed byte g (row-major over
``packed_shape(shape, 1)``), bit b, is ``randint4x(seed, offset + 2 * g + b // 4)[b % 4] >=
keep_threshold(p)``; padding bits use counters too and are then cleared. One call uses Philox
counters [offset, offset + 2 * n_bytes) (`dropout_params.philox_counters`). Output and gradient are
``(v.float() * keep * scale).to(v.dtype)`` with scale = `dropout_params.dropout_scale(p)`.
``tests/layers/dropout_oracle.py`` regenerates all of it in plain torch for the tests.

Example::

    >>> x = torch.randn(8, 768, device="cuda")
    >>> y, packed = fused_dropout_forward(x, p=0.1, seed=draw_seed())   # packed: uint8 (8, 96)
    >>> gx = fused_dropout_backward(torch.ones_like(y), packed, p=0.1)
    >>> # or save only the seed: fused_dropout_seeded_backward(torch.ones_like(y), 0.1, seed) == gx
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bittensor_core import packed_shape
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from bittensor_core.kernels.triton_pack import byte_tile, check_runnable, launch_geometry, on_device

from .dropout_params import check_dtype, check_seed, draw_seed, dropout_scale, keep_threshold

__all__ = ["draw_seed", "fused_dropout_backward", "fused_dropout_forward", "fused_dropout_seeded_backward"]

_BYTES_PER_PROGRAM = 128  # x 8 elements each: 1024 elements per program


@triton.jit
def _round_to_bf16(v):
    # float32 -> bfloat16, round to nearest even, NaN kept NaN: c10::BFloat16's rounding, spelled out
    # because the interpreter's .to(tl.bfloat16) truncates while compiled code rounds.
    u = v.to(tl.uint32, bitcast=True)
    u = tl.where(v != v, 0x7FC0, (u + 0x7FFF + ((u >> 16) & 1)) >> 16)
    return u.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _scale_by_mask(v, keep, scale):
    # (v * keep) * scale in float32, rounded once to v's dtype (NOTE(philox) above).
    out = v.to(tl.float32) * keep.to(tl.float32) * scale
    if v.dtype == tl.bfloat16:
        res = _round_to_bf16(out)
    else:
        res = out.to(v.dtype)
    return res


@triton.jit
def _keep_bits(seed, offset, byte, threshold):
    """The packed keep byte for each of `byte` (BLOCK,): bit b from counter 2*byte + b//4, draw b%4."""
    half = tl.arange(0, 2)[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, offset + byte[:, None] * 2 + half)
    nibble = (
        (r0.to(tl.int64) >= threshold).to(tl.int32)
        | ((r1.to(tl.int64) >= threshold).to(tl.int32) << 1)
        | ((r2.to(tl.int64) >= threshold).to(tl.int32) << 2)
        | ((r3.to(tl.int64) >= threshold).to(tl.int32) << 3)
    )
    return tl.sum(nibble << (half * 4), axis=1)


@triton.jit
def _dropout_fwd_kernel(
    x_ptr,
    y_ptr,
    mask_ptr,
    n_bytes,
    cols,
    row_nbytes,
    seed,
    offset,
    threshold,
    scale,
    BLOCK: tl.constexpr,
    ALIGNED: tl.constexpr,
    WRITE_MASK: tl.constexpr,
):
    byte, byte_ok, elem, elem_ok = byte_tile(n_bytes, cols, row_nbytes, BLOCK, 8, ALIGNED)
    shifts = tl.arange(0, 8)[None, :]
    keep = ((_keep_bits(seed, offset, byte, threshold)[:, None] >> shifts) & 1) * elem_ok.to(tl.int32)
    x = tl.load(x_ptr + elem, mask=elem_ok, other=0.0)
    tl.store(y_ptr + elem, _scale_by_mask(x, keep, scale), mask=elem_ok)
    if WRITE_MASK:
        tl.store(mask_ptr + byte, tl.sum(keep << shifts, axis=1).to(tl.uint8), mask=byte_ok)


@triton.jit
def _dropout_bwd_kernel(
    grad_ptr, mask_ptr, out_ptr, n_bytes, cols, row_nbytes, scale, BLOCK: tl.constexpr, ALIGNED: tl.constexpr
):
    byte, byte_ok, elem, elem_ok = byte_tile(n_bytes, cols, row_nbytes, BLOCK, 8, ALIGNED)
    packed = tl.load(mask_ptr + byte, mask=byte_ok, other=0).to(tl.int32)
    keep = (packed[:, None] >> tl.arange(0, 8)[None, :]) & 1
    grad = tl.load(grad_ptr + elem, mask=elem_ok, other=0.0)
    tl.store(out_ptr + elem, _scale_by_mask(grad, keep, scale), mask=elem_ok)


def _grid(n_bytes: int) -> tuple[int]:
    return (triton.cdiv(n_bytes, _BYTES_PER_PROGRAM),)


def _masked_scale(
    x: torch.Tensor, p: float, seed: int, offset: int, write_mask: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    # The forward kernel; without write_mask it only scales (the seeded backward).
    check_seed(seed, offset)
    check_runnable(x, "x")
    scale, threshold = dropout_scale(p), keep_threshold(p)
    x = x.contiguous()
    y = torch.empty_like(x)
    packed = torch.empty(packed_shape(x.shape, 1) if write_mask else 0, dtype=torch.uint8, device=x.device)
    if x.numel():
        n_bytes, cols, nbytes, aligned = launch_geometry(x.shape, 1)
        with on_device(x):
            _dropout_fwd_kernel[_grid(n_bytes)](
                x,
                y,
                packed,
                n_bytes,
                cols,
                nbytes,
                seed,
                offset,
                threshold,
                scale,
                BLOCK=_BYTES_PER_PROGRAM,
                ALIGNED=aligned,
                WRITE_MASK=write_mask,
            )
    return y, packed


def fused_dropout_forward(
    x: torch.Tensor, p: float, seed: int, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dropout of `x` (any shape; float16 / bfloat16 / float32) in one pass.

    Returns (y, packed): y contiguous with x's shape and dtype, packed uint8 of
    ``packed_shape(x.shape, 1)`` holding the keep-mask (bit set = kept). The call uses Philox
    counters [offset, offset + philox_counters(x.shape)); give a fresh seed (or an
    advanced offset) per call.
    """
    check_dtype(x, "x")
    return _masked_scale(x, p, seed, offset, write_mask=True)


def fused_dropout_backward(grad: torch.Tensor, packed: torch.Tensor, p: float) -> torch.Tensor:
    """Input gradient: grad (any shape, float16 / bfloat16 / float32) scaled by the packed keep-mask.

    `packed` is the uint8 mask returned by `fused_dropout_forward` (``packed_shape(grad.shape, 1)``),
    `p` the same probability. Returns a contiguous tensor of grad's shape and dtype.
    """
    check_dtype(grad, "grad")
    check_runnable(grad, "grad")
    if packed.dtype != torch.uint8:
        raise PackedBoolTypeError(f"packed has dtype={packed.dtype}; pass the uint8 mask from the forward.")
    if tuple(packed.shape) != packed_shape(grad.shape, 1):
        raise PackedBoolValueError(
            f"packed has shape {tuple(packed.shape)}, but grad of shape {tuple(grad.shape)} needs "
            f"{packed_shape(grad.shape, 1)}; pass the mask of the same forward call."
        )
    if packed.device != grad.device:
        raise PackedBoolValueError(
            f"packed is on {packed.device} but grad on {grad.device}; keep them together."
        )
    scale = dropout_scale(p)
    grad = grad.contiguous()
    out = torch.empty_like(grad)
    if grad.numel():
        n_bytes, cols, nbytes, aligned = launch_geometry(grad.shape, 1)
        with on_device(grad):
            _dropout_bwd_kernel[_grid(n_bytes)](
                grad,
                packed.contiguous(),
                out,
                n_bytes,
                cols,
                nbytes,
                scale,
                BLOCK=_BYTES_PER_PROGRAM,
                ALIGNED=aligned,
            )
    return out


def fused_dropout_seeded_backward(grad: torch.Tensor, p: float, seed: int, offset: int = 0) -> torch.Tensor:
    """Input gradient when nothing but (seed, offset) was saved: draws the forward's mask again.

    Equals ``fused_dropout_backward(grad, packed, p)`` for the `packed` that
    ``fused_dropout_forward(x, p, seed, offset)`` returned for x of grad's shape (0 bytes saved per
    element, at the price of the Philox draws in backward).
    """
    check_dtype(grad, "grad")
    return _masked_scale(grad, p, seed, offset, write_mask=False)[0]
