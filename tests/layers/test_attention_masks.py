"""padding_causal_mask: built from packed rows, equal to the bool construction at every width."""

from __future__ import annotations

import pytest
import torch

from bittensor_core import WIDTHS, PackedBool, PackedBoolTypeError, PackedBoolValueError
from layers import padding_causal_mask


def reference(attention_mask: torch.Tensor | None, q_len: int, kv_len: int, causal: bool) -> torch.Tensor:
    keep = torch.ones(1, 1, q_len, kv_len, dtype=torch.bool)
    if causal:
        keep = keep & torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    if attention_mask is not None:
        keep = keep & attention_mask.bool()[:, None, None, :]
    return keep


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("q_len", "kv_len"), [(4, 4), (1, 9), (13, 13), (3, 17), (0, 5), (16, 16)])
@pytest.mark.parametrize("padded", [False, True])
def test_equals_bool_construction(q_len: int, kv_len: int, causal: bool, bits: int, padded: bool) -> None:
    attention_mask = (
        (torch.rand(3, kv_len, generator=torch.Generator().manual_seed(kv_len)) > 0.3).long()
        if padded
        else None
    )
    got = padding_causal_mask(attention_mask, q_len, kv_len, causal=causal, bits=bits)
    ref = reference(attention_mask, q_len, kv_len, causal)
    assert isinstance(got, PackedBool) and got.bits == bits and got.shape == ref.shape
    assert torch.equal(got.unpack(), ref)
    assert torch.equal(got.packed, PackedBool(ref.contiguous(), bits=bits).packed)  # padding bits zero


def test_bad_inputs() -> None:
    with pytest.raises(PackedBoolValueError, match="kv_len=4"):
        padding_causal_mask(torch.ones(2, 5), 4, 4, causal=False)
    with pytest.raises(PackedBoolTypeError, match="float"):
        padding_causal_mask(torch.ones(2, 4), 4, 4, causal=False)
    with pytest.raises(PackedBoolValueError, match="q_len=5"):
        padding_causal_mask(None, 5, 4, causal=True)
    with pytest.raises(PackedBoolValueError, match="bits=3"):
        padding_causal_mask(None, 4, 4, causal=True, bits=3)
