"""CPU kernels on numpy's packbits / unpackbits / bitwise_count (bitorder little).

Bandwidth-bound C loops: packing a 4.9 M-element mask takes about as long as cloning it.
Only 1-bit packing has a numpy fast path; the other widths use the torch reference.
"""

from __future__ import annotations

import numpy as np
import torch

from ..layout import last_dim, num_rows, packed_shape


def _rows(t: torch.Tensor, row_len: int, aligned: bool) -> np.ndarray:
    # Rows of whole bytes need no per-row padding, and numpy's flat loop is ~25 % faster.
    return t.reshape(-1).numpy() if aligned else t.reshape(num_rows(t.shape), row_len).numpy()


def pack(mask: torch.Tensor, bits: int) -> torch.Tensor:
    cols = last_dim(mask.shape)
    out = np.packbits(_rows(mask, cols, cols % 8 == 0), axis=-1, bitorder="little")
    return torch.from_numpy(out).view(packed_shape(mask.shape, bits))


def unpack(packed: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int) -> torch.Tensor:
    cols = last_dim(shape)
    rows = _rows(packed, packed.shape[-1], cols % 8 == 0)
    out = np.unpackbits(rows, axis=-1, count=rows.shape[-1] * 8 if cols % 8 == 0 else cols, bitorder="little")
    return torch.from_numpy(out.view(np.bool_)).view(shape)


def popcount(packed: torch.Tensor) -> torch.Tensor:
    return torch.tensor(int(np.bitwise_count(packed.numpy()).sum(dtype=np.int64)))
