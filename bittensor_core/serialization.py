"""torch.save / torch.load(weights_only=True) for PackedBool, with a checksum.

The payload is the packed storage plus (shape, bits, unpack mode, CRC-32). The CRC covers the
bytes *and* the metadata. Loading validates everything before it trusts anything, cheapest
first: metadata types, then that the storage is a contiguous uint8 tensor owning exactly the
bytes the declared shape needs (so a crafted stride-0 or oversized storage is rejected before
any byte is read or copied), then the CRC, then that padding and unused field bits are zero.
Any failure raises `CorruptPayloadError`; a truncated file fails inside torch.load's reader.
On ``map_location="meta"`` there are no bytes: the metadata checks run, the CRC cannot.
"""

from __future__ import annotations

import copyreg
import zlib

import torch

from .errors import CorruptPayloadError
from .layout import UNPACK_MODES, WIDTHS, packed_shape, stray_bits
from .packed_bool import PackedBool


def _crc(packed: torch.Tensor, shape: tuple[int, ...], bits: int, unpack: str) -> int:
    meta = zlib.crc32(repr((tuple(shape), bits, unpack)).encode())
    return zlib.crc32(packed.detach().cpu().contiguous().numpy().tobytes(), meta)


def reduce_packed_bool(pb: PackedBool) -> tuple:
    """Pickle payload of a PackedBool (storage trimmed to exactly its own bytes); registered with
    `copyreg`, which pickle consults before ``Tensor.__reduce_ex__``."""
    packed = pb.packed.contiguous()
    if packed.storage_offset() or packed.untyped_storage().nbytes() != packed.numel():
        packed = packed.clone()  # a view of a larger storage would save (and load) all of it
    meta = (tuple(pb.shape), pb.bits, pb.unpack_mode)
    crc = _crc(packed, *meta) if packed.device.type != "meta" else 0
    return rebuild_packed_bool, (packed, *meta, crc)


def _is_int(x: object) -> bool:
    return type(x) is int


def rebuild_packed_bool(
    packed: torch.Tensor, shape: tuple[int, ...], bits: int, unpack: str, crc: int
) -> PackedBool:
    """Inverse of `reduce_packed_bool`; validates the payload before trusting it."""
    if not (_is_int(bits) and bits in WIDTHS and isinstance(unpack, str) and unpack in UNPACK_MODES):
        raise CorruptPayloadError(f"PackedBool payload has bits={bits!r}, unpack={unpack!r}.")
    if not (isinstance(shape, tuple) and all(_is_int(n) and n >= 0 for n in shape) and _is_int(crc)):
        raise CorruptPayloadError(f"PackedBool payload has shape={shape!r}, crc={crc!r}.")
    if (
        not isinstance(packed, torch.Tensor)
        or type(packed) is not torch.Tensor
        or packed.dtype != torch.uint8
    ):
        raise CorruptPayloadError("PackedBool payload's storage is not a plain uint8 tensor.")
    if tuple(packed.shape) != packed_shape(shape, bits):
        raise CorruptPayloadError(
            f"PackedBool payload: storage shape {tuple(packed.shape)} does not fit mask shape "
            f"{shape} at bits={bits} (expected {packed_shape(shape, bits)})."
        )
    # Before touching a byte: a stride-0 (expanded) or oversized storage is a memory bomb.
    if (
        not packed.is_contiguous()
        or packed.storage_offset() != 0
        or packed.untyped_storage().nbytes() != packed.numel()
    ):
        raise CorruptPayloadError(
            f"PackedBool payload's storage ({packed.untyped_storage().nbytes()} bytes, strides "
            f"{packed.stride()}) is not exactly its {packed.numel()} contiguous bytes."
        )
    if packed.device.type != "meta":
        if _crc(packed, shape, bits, unpack) != crc:
            raise CorruptPayloadError(
                "PackedBool payload failed its CRC-32 check (bytes or shape/bits/unpack): the "
                "file is corrupted. Re-create it."
            )
        if stray_bits(packed, shape, bits):
            raise CorruptPayloadError(
                "PackedBool payload has padding or unused field bits set: it was not written by "
                "PackedBool. Re-create it."
            )
    return PackedBool.from_packed(packed, shape, bits=bits, unpack=unpack)


copyreg.pickle(PackedBool, reduce_packed_bool)
torch.serialization.add_safe_globals([rebuild_packed_bool])
