"""torch.save / torch.load(weights_only=True) round trip; corrupted payloads raise."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from bittensor_core import CorruptPayloadError, PackedBool, PackedBoolValueError, packed_shape
from bittensor_core.kernels import torch_ref

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


class _Payload:
    """Pickles as a hand-made PackedBool payload (what a malicious or corrupted file holds)."""

    def __init__(self, *args: object) -> None:
        self.args = args

    def __reduce_ex__(self, protocol: int) -> tuple:
        from bittensor_core.serialization import rebuild_packed_bool

        return rebuild_packed_bool, self.args


def _crc(packed: torch.Tensor, shape: tuple[int, ...], bits: int, unpack: str = "lazy") -> int:
    from bittensor_core.serialization import _crc

    return _crc(packed, shape, bits, unpack)


@pytest.mark.parametrize("rows", [2**30, 2**40])
def test_stride_zero_storage_is_rejected_before_it_is_read(rows: int) -> None:
    one_byte = torch.zeros(1, 1, dtype=torch.uint8)
    data = _save(_Payload(one_byte.expand(rows, 1), (rows, 8), 1, "lazy", 0))
    assert len(data) < 4096
    with pytest.raises(CorruptPayloadError, match="not exactly its"):
        _load(data)


@pytest.mark.parametrize("make", [lambda t: t[::2], lambda t: t[1:], lambda t: t.t().contiguous().t()])
def test_storage_that_is_not_exactly_its_bytes_is_rejected(make) -> None:
    big = PackedBool(torch.rand(8, 16) < 0.5).packed
    packed = make(big)
    shape = (packed.shape[0], 8 * packed.shape[1])
    with pytest.raises(CorruptPayloadError):
        _load(_save(_Payload(packed, shape, 1, "lazy", _crc(packed.contiguous(), shape, 1))))


def test_views_save_only_their_own_bytes() -> None:
    pb = PackedBool(torch.rand(64, 64) < 0.5)
    part = pb[10:12]
    loaded = _load(_save(part))
    assert torch.equal(loaded.unpack(), part.unpack())
    assert loaded.packed.untyped_storage().nbytes() == part.packed.numel()


def test_crc_covers_the_metadata() -> None:
    pb = PackedBool(torch.rand(3, 10) < 0.5)
    crc = _crc(pb.packed, (3, 10), 1)
    _load(_save(_Payload(pb.packed.clone(), (3, 10), 1, "lazy", crc)))  # the honest payload loads
    for shape, bits, unpack in [((3, 11), 1, "lazy"), ((3, 10), 1, "cached")]:
        with pytest.raises(CorruptPayloadError, match="CRC"):
            _load(_save(_Payload(pb.packed.clone(), shape, bits, unpack, crc)))


@pytest.mark.parametrize("bits", WIDTHS)
def test_set_padding_or_field_bits_are_rejected(bits: int) -> None:
    shape = (4, 10)
    packed = torch.full(packed_shape(shape, bits), 0xFF, dtype=torch.uint8)
    with pytest.raises(CorruptPayloadError, match="padding or unused"):
        _load(_save(_Payload(packed, shape, bits, "lazy", _crc(packed, shape, bits))))


@pytest.mark.parametrize("bad", [2.0, True, "1", None])
def test_widths_must_be_ints(bad: object) -> None:
    with pytest.raises(PackedBoolValueError, match=r"bits=.*\(1, 2, 4, 8\)"):
        PackedBool(torch.zeros(3, dtype=torch.bool), bits=bad)
    packed = torch.zeros(1, 1, dtype=torch.uint8)
    with pytest.raises(CorruptPayloadError, match="bits="):
        _load(_save(_Payload(packed, (1, 1), bad, "lazy", 0)))


def test_meta_map_location_and_misaligned_views() -> None:
    data = _save({"mask": PackedBool(torch.rand(3, 10) < 0.5, bits=2), "w": torch.ones(2)})
    loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="meta")
    assert loaded["mask"].device.type == "meta" and loaded["mask"].shape == (3, 10)
    base = torch.rand(40) < 0.5
    for view in (base[3:19].view(2, 8), torch.empty(40, dtype=torch.bool, device="meta")[3:19].view(2, 8)):
        pb = PackedBool(view)  # storage offset 3: not a multiple of 8
        if view.device.type == "cpu":
            assert torch.equal(torch_ref.unpack(torch_ref.pack(view, 1), view.shape, 1), view)
            assert torch.equal(pb.unpack(), view)
    param = torch.nn.Parameter(base, requires_grad=False)
    assert torch.equal(PackedBool(param[5:21].view(2, 8)).unpack(), base[5:21].view(2, 8))


def test_fuzzed_files_never_load_a_wrong_mask() -> None:
    """Bit flips and truncations of a saved file, plus crafted payloads: each either raises or
    loads the exact mask with storage no larger than the file (deterministic, a few seconds)."""
    mask = torch.rand(5, 13, generator=torch.Generator().manual_seed(0)) < 0.5
    data = _save(PackedBool(mask, bits=2))
    gen = torch.Generator().manual_seed(1)
    flips = torch.randint(0, len(data) * 8, (400,), generator=gen).tolist()
    cuts = torch.randint(0, len(data), (40,), generator=gen).tolist()
    variants = [bytes(data[:c]) for c in cuts]
    for bit in flips:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        variants.append(bytes(flipped))
    loaded_ok = 0
    for variant in variants:
        try:
            loaded = _load(variant)
        except Exception:  # noqa: BLE001, S112  (any clean failure is fine; a wrong mask is not)
            continue
        assert isinstance(loaded, PackedBool) and loaded.bits == 2
        assert torch.equal(loaded.unpack(), mask)
        assert loaded.packed.untyped_storage().nbytes() <= len(variant)
        loaded_ok += 1
    assert loaded_ok < len(variants)  # the corruptions were seen


def test_fuzzed_crafted_payloads_are_rejected_or_exact() -> None:
    """Crafted payloads with a valid CRC for their declared metadata: genuine storage loads
    exactly; storage expanded with stride 0 to 2**40 rows, a window into a larger buffer (offset,
    row gaps), or bytes changed after the CRC was taken is rejected (deterministic)."""
    gen = torch.Generator().manual_seed(2)

    def draw(n: int) -> int:
        return int(torch.randint(0, n, (), generator=gen))

    seen = set()
    for _ in range(120):
        bits, rows, cols = WIDTHS[draw(4)], 1 + draw(3), 1 + draw(20)
        mask = torch.rand(rows, cols, generator=gen) < 0.5
        packed, shape, kind = PackedBool(mask, bits=bits).packed, (rows, cols), draw(4)
        crc = _crc(packed, shape, bits)
        if kind == 1:  # the memory bomb: one row, stride 0
            packed, shape, crc = packed[:1].expand(2**40, -1), (2**40, cols), 0
        elif kind == 2:  # a window: offset and row gaps into a larger buffer
            big = torch.zeros(rows, 2 * packed.shape[1] + 1, dtype=torch.uint8)
            packed = big[:, 1 : 1 + packed.shape[1]].copy_(packed)
        elif kind == 3:  # a byte changed after the CRC was taken
            packed = packed.clone()
            packed.view(-1)[draw(packed.numel())] ^= 1 << draw(8)
        seen.add(kind)
        payload = _Payload(packed, shape, bits, "lazy", crc)
        if kind == 0:
            loaded = _load(_save(payload))
            assert torch.equal(loaded.unpack(), mask) and int(loaded.sum()) == int(mask.sum())
        else:
            with pytest.raises(CorruptPayloadError):
                _load(_save(payload))
    assert seen == {0, 1, 2, 3}
