"""torch.save / torch.load(weights_only=True) for PackedBool, with a checksum.

The payload is the packed storage plus (shape, bits, unpack mode, CRC-32 of the bytes). Loading
checks all of them, so a corrupted payload raises `CorruptPayloadError` instead of returning
wrong bits; a truncated file already fails inside torch.load's archive reader.
"""

from __future__ import annotations

import zlib

import torch

from .errors import CorruptPayloadError
from .layout import UNPACK_MODES, WIDTHS, packed_shape


def _crc(packed: torch.Tensor) -> int:
    return zlib.crc32(packed.detach().cpu().contiguous().numpy().tobytes())


def reduce_packed_bool(pb) -> tuple:  # noqa: ANN001
    """`__reduce_ex__` payload of a PackedBool."""
    packed = pb.packed.contiguous()
    return rebuild_packed_bool, (packed, tuple(pb.shape), pb.bits, pb.unpack_mode, _crc(packed))


def rebuild_packed_bool(
    packed: torch.Tensor, shape: tuple[int, ...], bits: int, unpack: str, crc: int
):  # noqa: ANN201
    """Inverse of `reduce_packed_bool`; validates the payload before trusting it."""
    from .packed_bool import PackedBool

    if bits not in WIDTHS or unpack not in UNPACK_MODES:
        raise CorruptPayloadError(f"PackedBool payload has bits={bits!r}, unpack={unpack!r}.")
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise CorruptPayloadError("PackedBool payload's storage is not a uint8 tensor.")
    if tuple(packed.shape) != packed_shape(tuple(shape), bits):
        raise CorruptPayloadError(
            f"PackedBool payload: storage shape {tuple(packed.shape)} does not fit mask shape "
            f"{tuple(shape)} at bits={bits} (expected {packed_shape(tuple(shape), bits)})."
        )
    if _crc(packed) != crc:
        raise CorruptPayloadError(
            "PackedBool payload failed its CRC-32 check: the file is corrupted. Re-create it."
        )
    return PackedBool.from_packed(packed, tuple(shape), bits=bits, unpack=unpack)


torch.serialization.add_safe_globals([rebuild_packed_bool])
