"""Bad input gets a clear error naming the value and the fix."""

from __future__ import annotations

import pytest
import torch

from bittensor_core import PackedBool, PackedBoolError, pack_saved_bools


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.int64])
def test_non_bool_input(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match=rf"dtype={dtype}.*mask\.bool\(\)"):
        PackedBool(torch.zeros(3, dtype=dtype))


def test_non_tensor_input() -> None:
    with pytest.raises(TypeError, match="list"):
        PackedBool([True, False])


@pytest.mark.parametrize("bits", [0, 3, 16, "1"])
def test_bad_width(bits: object) -> None:
    with pytest.raises(ValueError, match=r"bits=.*\(1, 2, 4, 8\)"):
        PackedBool(torch.zeros(3, dtype=torch.bool), bits=bits)
    with pytest.raises(PackedBoolError):
        pack_saved_bools(bits=bits)


def test_bad_unpack_mode() -> None:
    with pytest.raises(ValueError, match=r"unpack='eager'.*\('lazy', 'cached'\)"):
        PackedBool(torch.zeros(3, dtype=torch.bool), unpack="eager")


def test_wrapping_twice_does_not_double_pack() -> None:
    mask = torch.rand(5, 12) < 0.5
    once = PackedBool(mask)
    twice = PackedBool(once)
    assert isinstance(twice, PackedBool) and twice.packed is once.packed
    assert torch.equal(twice.unpack(), mask)
    wider = PackedBool(once, bits=4, unpack="cached")
    assert wider.bits == 4 and wider.unpack_mode == "cached" and torch.equal(wider.unpack(), mask)
