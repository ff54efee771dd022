"""Pack / unpack round trip and the storage layout, on both kernels, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bittensor_core import PackedBool, row_bytes
from bittensor_core.kernels import numpy_cpu, torch_ref
from bittensor_core.layout import first_fields, last_dim, num_rows, packed_shape, per_byte

from .strategies import MODES, WIDTHS, masks


@settings(max_examples=60, deadline=None)
@given(mask=masks(), bits=st.sampled_from(WIDTHS), mode=st.sampled_from(MODES))
def test_round_trip(mask: torch.Tensor, bits: int, mode: str) -> None:
    pb = PackedBool(mask, bits=bits, unpack=mode)
    assert pb.shape == mask.shape and pb.dtype == torch.bool and pb.device == mask.device
    assert torch.equal(pb.unpack(), mask)
    assert torch.equal(pb.unpack(), mask)  # second use: from the cache in cached mode
    assert pb.packed.dtype == torch.uint8
    assert tuple(pb.packed.shape) == packed_shape(mask.shape, bits)


@settings(max_examples=60, deadline=None)
@given(mask=masks())
def test_one_bit_layout_is_numpy_packbits_little(mask: torch.Tensor) -> None:
    rows = mask.reshape(num_rows(mask.shape), last_dim(mask.shape)).numpy()
    expected = np.packbits(rows, axis=-1, bitorder="little")
    assert np.array_equal(PackedBool(mask).packed.reshape(expected.shape).numpy(), expected)


@settings(max_examples=60, deadline=None)
@given(mask=masks(), bits=st.sampled_from(WIDTHS))
def test_kernels_agree_bit_for_bit(mask: torch.Tensor, bits: int) -> None:
    ref = torch_ref.pack(mask, bits)
    if bits == 1:
        assert torch.equal(numpy_cpu.pack(mask, bits), ref)
        assert torch.equal(numpy_cpu.unpack(ref, mask.shape, bits), mask)
        assert numpy_cpu.popcount(ref).item() == torch_ref.popcount(ref).item()
    assert torch.equal(torch_ref.unpack(ref, mask.shape, bits), mask)
    assert torch_ref.popcount(ref).item() == int(mask.sum())


@settings(max_examples=40, deadline=None)
@given(mask=masks(), bits=st.sampled_from(WIDTHS))
def test_padding_and_unused_field_bits_are_zero(mask: torch.Tensor, bits: int) -> None:
    packed = PackedBool(mask, bits=bits).packed
    assert not (packed & ~first_fields(per_byte(bits), bits) & 0xFF).any()
    full = PackedBool(torch.ones_like(mask), bits=bits).packed
    assert torch_ref.popcount(full).item() == mask.numel()  # so padding bits stay zero


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("cols", [1, 7, 8, 9, 100, 1200])
def test_storage_size_is_rows_times_ceil(bits: int, cols: int) -> None:
    pb = PackedBool(torch.zeros(3, cols, dtype=torch.bool), bits=bits)
    assert pb.packed_nbytes == 3 * row_bytes(cols, bits) == 3 * -(-cols * bits // 8)


def test_bit_level_example_from_the_docs() -> None:
    mask = torch.tensor([[True, False, True, True, False, False, False, False, True, True]])
    assert PackedBool(mask).packed.tolist() == [[0b00001101, 0b00000011]]
    assert PackedBool(mask, bits=2).packed.tolist() == [[0b01010001, 0b00000000, 0b00000101]]
    assert PackedBool(mask, bits=4).packed.tolist() == [[0b1, 0b00010001, 0, 0, 0b00010001]]


def test_non_contiguous_and_channels_last_inputs() -> None:
    base = torch.rand(2, 3, 5, 6) < 0.5
    for mask in (base.transpose(1, 3), base[:, :, ::2], base.to(memory_format=torch.channels_last)):
        assert torch.equal(PackedBool(mask).unpack(), mask)


def test_cached_mode_keeps_until_release() -> None:
    mask = torch.rand(5, 9) < 0.5
    pb = PackedBool(mask, unpack="cached")
    first = pb.unpack()
    assert pb.unpack() is first
    pb.release()
    assert pb.unpack() is not first and torch.equal(pb.unpack(), mask)
    lazy = PackedBool(mask)
    assert lazy.unpack() is not lazy.unpack()


def test_meta_and_sparse_inputs() -> None:
    meta = PackedBool(torch.empty(4, 10, dtype=torch.bool, device="meta"))
    assert meta.device.type == "meta" and meta.packed.shape == (4, 2)
    mask = torch.rand(4, 10) < 0.3
    assert torch.equal(PackedBool(mask.to_sparse()).unpack(), mask)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 33])
def test_flat_pack_for_compiled_code_is_the_same_bytes(bits: int, n: int) -> None:
    flat = torch.rand(n) < 0.5
    packed = torch_ref.pack_flat(flat, bits)
    assert torch.equal(packed, torch_ref.pack(flat, bits))
    assert torch.equal(torch_ref.unpack_flat(packed, n, bits), flat)
