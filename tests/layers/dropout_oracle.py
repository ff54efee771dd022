"""Plain-torch oracle of the fused Triton dropout (`layers.kernels.triton_dropout`), bit for bit.

`keep_mask` regenerates the mask NOTE(philox) in `layers/kernels/triton_dropout.py` specifies
(int64 arithmetic; Philox checked against the Random123 known-answer vectors), and `forward` /
`backward` apply a packed mask with the kernels' arithmetic, so tests compare the kernels with it
exactly.

Example::

    >>> keep = keep_mask((2, 5), p=0.1, seed=7)          # bool (2, 5)
    >>> y = forward(x, torch_ref.pack(keep, 1), p=0.1)   # x: float (2, 5)
"""

from __future__ import annotations

import torch

from bittensor_core.kernels import torch_ref
from bittensor_core.layout import last_dim, num_rows, row_bytes
from layers.kernels.dropout_params import check_dtype, check_seed, dropout_scale, keep_threshold

_M32 = 0xFFFFFFFF
_PHILOX_KEY_A, _PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
_PHILOX_ROUND_A, _PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57
_PHILOX_ROUNDS = 10


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # 32 x 32 -> 64-bit product of uint32 values held in int64, split at 16 bits so nothing overflows.
    t = a * (b & 0xFFFF)
    u = a * (b >> 16) + (t >> 16)
    return u >> 16, ((u & 0xFFFF) << 16) | (t & 0xFFFF)


def philox4x32_10(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], key: tuple[int, int]
) -> torch.Tensor:
    """Philox4x32-10 (Random123; Triton's `philox_impl`) of 4 uint32 counter words held in int64
    tensors of one shape (N,) under a 2-word key: the (N, 4) uint32 outputs, in int64."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(_PHILOX_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(_PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _PHILOX_KEY_A) & _M32, (k1 + _PHILOX_KEY_B) & _M32
    return torch.stack((c0, c1, c2, c3), dim=-1)


def randint4x(seed: int, counter: torch.Tensor) -> torch.Tensor:
    """Triton's ``tl.randint4x(seed, counter)`` for an int64 `counter` (N,): (N, 4) uint32 in int64."""
    zero = torch.zeros_like(counter)
    words = (counter & _M32, (counter >> 32) & _M32, zero, zero)
    return philox4x32_10(words, (seed & _M32, (seed >> 32) & _M32))


def keep_mask(
    shape: torch.Size | tuple[int, ...],
    p: float,
    seed: int,
    offset: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The bool keep-mask of logical `shape` that the fused forward draws for (p, seed, offset)."""
    check_seed(seed, offset)
    rows, cols = num_rows(shape), last_dim(shape)
    padded_cols = row_bytes(cols, 1) * 8
    counter = offset + torch.arange(rows * padded_cols // 4, dtype=torch.int64, device=device)
    draws = randint4x(seed, counter).reshape(rows, padded_cols)
    return (draws[:, :cols] >= keep_threshold(p)).reshape(shape)


def apply_mask(v: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """``(v * keep * scale)`` computed in float32 and rounded once to v's dtype (the kernels' formula)."""
    check_dtype(v, "input")
    return (v.to(torch.float32) * keep.to(torch.float32) * dropout_scale(p)).to(v.dtype)


def forward(x: torch.Tensor, packed: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout output of `x` (any shape) under the 1-bit packed keep-mask `packed`."""
    return apply_mask(x, torch_ref.unpack(packed, x.shape, 1), p)


def backward(grad: torch.Tensor, packed: torch.Tensor, p: float) -> torch.Tensor:
    """Gradient of the input given the output gradient and the same packed keep-mask."""
    return apply_mask(grad, torch_ref.unpack(packed, grad.shape, 1), p)
