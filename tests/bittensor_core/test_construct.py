"""The core's direct constructors and decoder against pack / unpack of the bool mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bittensor_core import (
    PackedBool,
    PackedBoolValueError,
    causal_rows,
    packed_from_random_bytes,
    packed_shape,
    unpack_scaled,
)
from bittensor_core.layout import stray_bits

from .strategies import WIDTHS


@pytest.mark.parametrize("shape", [(3, 13), (4, 16), (7,), (), (0, 5), (2, 3, 1)])
def test_random_bytes_become_the_mask_bits_in_order(shape: tuple[int, ...]) -> None:
    n = int(np.prod(packed_shape(shape, 1)))
    stream = torch.randint(0, 256, (n + 3,), dtype=torch.uint8)  # extra bytes are ignored
    rows = packed_from_random_bytes(stream.clone(), shape)
    cols = shape[-1] if shape else 1
    bits = np.unpackbits(stream[:n].numpy(), bitorder="little").reshape(-1, -(-cols // 8) * 8)[:, :cols]
    assert torch.equal(
        PackedBool.from_packed(rows, shape).unpack(), torch.from_numpy(bits.astype(bool)).view(shape)
    )
    assert not stray_bits(rows, shape, 1)


def test_random_bytes_too_few_is_refused() -> None:
    with pytest.raises(PackedBoolValueError, match="at least 4 bytes"):
        packed_from_random_bytes(torch.zeros(3, dtype=torch.uint8), (2, 9))


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize(("q_len", "kv_len"), [(5, 5), (3, 11), (1, 9), (0, 4), (17, 17)])
def test_causal_rows_are_the_packed_tril(bits: int, q_len: int, kv_len: int) -> None:
    want = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    assert torch.equal(causal_rows(q_len, kv_len, bits), PackedBool(want, bits=bits).packed)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unpack_scaled_is_zero_or_scale(bits: int, dtype: torch.dtype) -> None:
    mask = torch.rand(3, 4, 21) < 0.7
    pb, scale = PackedBool(mask, bits=bits), torch.tensor(1 / 0.7, dtype=dtype)
    out = unpack_scaled(pb.packed, pb.shape, bits, scale)
    assert out.dtype == dtype and out.shape == mask.shape
    assert torch.equal(out, torch.where(mask, scale, torch.zeros((), dtype=dtype)))
