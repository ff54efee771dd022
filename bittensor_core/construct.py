"""Packed rows built directly, with no bool tensor in between: from random bytes, causal rows.

Both return plain uint8 rows in the `bittensor_core.layout` layout (padding bits zero), ready for
``PackedBool.from_packed(rows, shape, bits=bits)``. Plain torch ops, so torch.compile traces them.
"""

from __future__ import annotations

import torch

from .errors import PackedBoolValueError
from .layout import first_fields, last_dim, num_rows, packed_shape, per_byte, row_bytes


def packed_from_random_bytes(random_bytes: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """1-bit packed rows of a mask of `shape` whose bits are `random_bytes`, in order.

    Bit j of the byte stream becomes element j of the storage (row-major over
    ``packed_shape(shape, 1)``), and the padding bits at the end of each row are cleared, so a
    stream of independent Bernoulli bits is valid packed storage without a packing pass.

    Args:
        random_bytes: 1-D uint8 tensor with at least ``prod(packed_shape(shape, 1))`` bytes (extra
            bytes are ignored; the result is a view of its memory).
        shape: the mask's logical shape.

    Returns:
        uint8 tensor of shape ``packed_shape(shape, 1)``.

    Example:
        >>> rows = packed_from_random_bytes(torch.full((8,), 0xFF, dtype=torch.uint8), (2, 5))
        >>> rows.tolist()                    # 5 bits set per row, 3 padding bits cleared
        [[31], [31]]
    """
    cols, nbytes = last_dim(shape), row_bytes(last_dim(shape), 1)
    needed = num_rows(shape) * nbytes
    if random_bytes.dtype != torch.uint8 or random_bytes.dim() != 1 or random_bytes.numel() < needed:
        raise PackedBoolValueError(
            f"random_bytes must be 1-D uint8 with at least {needed} bytes for shape {tuple(shape)}, got "
            f"{random_bytes.dtype} of shape {tuple(random_bytes.shape)}; draw ceil(numel / 8) per row."
        )
    rows = random_bytes[:needed].view(num_rows(shape), nbytes)
    if cols % 8:
        rows[:, -1] &= first_fields(cols % 8, 1)
    return rows.view(packed_shape(shape, 1))


def causal_rows(q_len: int, kv_len: int, bits: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Packed causal attention rows: row i has its first min(i + kv_len - q_len + 1, kv_len) bits set.

    Queries are the last `q_len` of `kv_len` positions (a KV cache when kv_len > q_len), so
    row i may attend keys 0 .. i + kv_len - q_len. Each row is a run of full bytes and one
    partial byte, built without the (q_len, kv_len) bool mask.

    Returns:
        uint8 tensor of shape ``packed_shape((q_len, kv_len), bits)``.

    Example:
        >>> causal_rows(3, 3, bits=1).tolist()
        [[1], [3], [7]]
    """
    k = per_byte(bits)
    ones = (torch.arange(q_len, device=device) + (kv_len - q_len) + 1).clamp(0, kv_len)
    first = torch.arange(row_bytes(kv_len, bits), device=device) * k
    fields = (ones[:, None] - first[None, :]).clamp(0, k)  # set fields in each byte
    table = torch.tensor([first_fields(f, bits) for f in range(k + 1)], dtype=torch.uint8, device=device)
    return table[fields]
