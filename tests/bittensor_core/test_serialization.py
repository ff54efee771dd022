"""torch.save / torch.load(weights_only=True) round trip; corrupted payloads raise."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from bittensor_core import CorruptPayloadError, PackedBool

from .strategies import MODES, WIDTHS


def _save(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(data: bytes) -> object:
    return torch.load(io.BytesIO(data), weights_only=True)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(), (0, 3), (7,), (3, 5, 17)])
def test_round_trip_weights_only(bits: int, mode: str, shape: tuple[int, ...]) -> None:
    mask = torch.rand(shape) < 0.5
    loaded = _load(_save({"mask": PackedBool(mask, bits=bits, unpack=mode)}))["mask"]
    assert isinstance(loaded, PackedBool)
    assert (loaded.bits, loaded.unpack_mode, loaded.shape) == (bits, mode, mask.shape)
    assert torch.equal(loaded.unpack(), mask)


def test_deepcopy_and_pickle() -> None:
    pb = PackedBool(torch.rand(4, 20) < 0.5, bits=2)
    for other in (copy.deepcopy(pb), pickle.loads(pickle.dumps(pb))):
        assert torch.equal(other.unpack(), pb.unpack()) and other.bits == 2
        assert other.packed.data_ptr() != pb.packed.data_ptr()


def test_flipped_byte_is_detected() -> None:
    pb = PackedBool(torch.rand(64, 64) < 0.5)
    data = bytearray(_save(pb))
    payload = pb.packed.numpy().tobytes()
    start = bytes(data).find(payload)
    assert start >= 0, "storage bytes not found in the archive"
    data[start + 100] ^= 0x10
    with pytest.raises(CorruptPayloadError, match="CRC"):
        _load(bytes(data))


def test_truncated_payload_raises() -> None:
    data = _save(PackedBool(torch.rand(64, 64) < 0.5))
    with pytest.raises(RuntimeError):
        _load(data[: len(data) // 2])


def test_inconsistent_metadata_is_rejected() -> None:
    from bittensor_core.serialization import rebuild_packed_bool

    packed = torch.zeros(3, 2, dtype=torch.uint8)
    with pytest.raises(CorruptPayloadError, match="does not fit"):
        rebuild_packed_bool(packed, (3, 30), 1, "lazy", 0)
    with pytest.raises(CorruptPayloadError, match="bits=3"):
        rebuild_packed_bool(packed, (3, 10), 3, "lazy", 0)
