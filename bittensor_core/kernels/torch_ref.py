"""Pure-torch pack / unpack / popcount: any device, traceable by torch.compile (`pack_flat` /
`unpack_flat`: the same bytes for 1-D masks with no size guard, for compiled code).

Each is a handful of whole-tensor ops (no per-element Python loop, no 8-pass shift-and-sum);
this is also the reference the faster per-device kernels are tested against, bit for bit. The
field split and merge are written with einops (``row (byte field)``: byte j's fields, in order),
which traces under torch.compile as the reshape it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from ..layout import last_dim, num_rows, packed_shape, per_byte, row_bytes
from ..tracing import constant, cut_to, padded_to, tracing

# Multiplying 8 little-endian 0/1 bytes (one int64) by this moves byte j's bit to bit 56 + j.
_GATHER_BITS = 0x0102040810204080


def pack(mask: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a bool tensor of any shape into uint8 rows (see `bittensor_core.layout`)."""
    cols, k = last_dim(mask.shape), per_byte(bits)
    nbytes = row_bytes(cols, bits)
    rows = padded_to(mask.reshape(num_rows(mask.shape), cols).view(torch.uint8), nbytes * k)
    if bits == 8:
        return rows.clone().view(packed_shape(mask.shape, bits))
    groups = rearrange(rows, "row (byte field) -> row byte field", field=k)
    if bits == 1:
        # (storage_offset() cannot be traced inside an autograd.Function: copy while compiling)
        if tracing() or groups.storage_offset() % 8 or not groups.is_contiguous():
            # clone, not contiguous(): a contiguous view would keep its misaligned offset
            groups = groups.clone(memory_format=torch.contiguous_format)
        word = groups.view(torch.int64).squeeze(-1)
        out = ((word * _GATHER_BITS) >> 56).to(torch.uint8)
    else:  # 2 or 4 fields per byte: OR the strided field views together
        out = groups[..., 0].clone()
        for i in range(1, k):
            out |= groups[..., i] << (i * bits)
    return out.view(packed_shape(mask.shape, bits))


def unpack(packed: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int) -> torch.Tensor:
    """Inverse of `pack`: a contiguous bool tensor of logical `shape`."""
    cols = last_dim(shape)
    fields = torch.stack([(packed >> (i * bits)) & 1 for i in range(per_byte(bits))], dim=-1)
    flat = cut_to(rearrange(fields, "... byte field -> ... (byte field)"), cols)
    # `!= 0`, not a uint8 -> bool view: inductor's CPU codegen miscompiles bool bitcasts.
    return (flat != 0).reshape(shape)


def pack_flat(flat: torch.Tensor, bits: int) -> torch.Tensor:
    """`kernels.pack` of a 1-D bool tensor as an OR of shifted fields: the same bytes, and no
    Python branch on the length, so a compiled graph does not specialise on the batch size."""
    k = per_byte(bits)
    fields = F.pad(flat.to(torch.uint8), (0, -flat.shape[0] % k))
    # shift of each field within its byte, built at the fields' own length: a broadcast against
    # the (bytes, k) view would guard on the byte count being 1 (and specialise small batches)
    shifts = (torch.arange(fields.shape[0], device=flat.device) % k * bits).to(torch.uint8)
    return (fields << shifts).view(-1, k).sum(-1, dtype=torch.uint8)


def unpack_flat(flat: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """Inverse of `pack_flat`: the first `n` elements, as bool. Pointwise ops only (a broadcast shift
    and an and), so AOTAutograd's partitioner recomputes them from the saved bytes instead of saving
    the bool mask (it recomputes no gather)."""
    shifts = torch.arange(per_byte(bits), device=flat.device, dtype=torch.uint8) * bits
    fields = (flat.reshape(-1, 1) >> shifts) & ((1 << bits) - 1)
    return (fields != 0).reshape(-1)[:n]


def scaled_fields(packed: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    """(bytes, 8 // bits): the value, 0 or `scale`, of each field of each byte (`kernels.scaled_fields`)
    as pointwise ops (broadcast shift, and, where): inductor fuses them into the kernel that multiplies
    by the result, and AOTAutograd's partitioner recomputes them in backward from the saved bytes
    instead of saving the float tensor (it does not recompute a gather)."""
    shifts = torch.arange(per_byte(bits), device=packed.device, dtype=torch.uint8) * bits
    fields = (packed.reshape(-1, 1) >> shifts) & 1
    return torch.where(fields != 0, scale.to(packed.device), constant(0.0, scale.dtype, packed.device))


def popcount(packed: torch.Tensor) -> torch.Tensor:
    """Total number of set bits, as an int64 0-dim tensor (SWAR bit count per byte)."""
    x = packed - ((packed >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    x = (x + (x >> 4)) & 0x0F
    return x.sum(dtype=torch.int64)
