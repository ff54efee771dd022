"""packed_attention: equals SDPA's math path / eager attention with the same dropout mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bittensor_core import WIDTHS, PackedBool, PackedBoolTypeError, PackedBoolValueError
from layers import packed_attention, padding_causal_mask

from .helpers import leaf, packed_bytes, saved_bytes

B, H, SQ, SK, D = 2, 3, 5, 7, 4


def qkv(sq: int = SQ, sk: int = SK, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    return leaf(B, H, sq, D, dtype=dtype), leaf(B, H, sk, D, dtype=dtype, seed=1), leaf(B, H, sk, D, dtype=dtype, seed=2)


def eager_attention(q, k, v, keep=None, p=0.0, causal=False):  # noqa: ANN001, ANN201
    """Hugging Face-style eager attention with F.dropout on the probabilities (the reference)."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if causal:
        scores = scores.masked_fill(~torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(), float("-inf"))
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf")) if keep.dtype == torch.bool else scores + keep
    return F.dropout(torch.softmax(scores, -1), p, True) @ v


def grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(out, inputs, torch.ones_like(out))


def masks() -> dict[str, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(3)
    keep = torch.rand(B, 1, SQ, SK, generator=gen) > 0.3
    keep[..., 0] = True  # no fully masked row here (tested separately)
    return {
        "none": None,
        "bool": keep,
        "packed": PackedBool(keep),
        "float": torch.randn(B, H, SQ, SK, generator=gen, dtype=torch.float64),
        "bool-broadcast-2d": keep[0, 0],
    }


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", list(masks()))
def test_no_dropout_matches_sdpa_math(name: str, causal: bool) -> None:
    q, k, v = qkv()
    mask = masks()[name]
    plain = mask.unpack() if isinstance(mask, PackedBool) else mask
    if causal and plain is not None and plain.dtype == torch.bool:
        plain = plain & torch.ones(SQ, SK, dtype=torch.bool).tril()
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q, k, v, plain, is_causal=causal and plain is None)
        if causal and plain is not None and plain.dtype != torch.bool:  # SDPA refuses mask + is_causal
            ref = eager_attention(q, k, v, plain, causal=True)
    out = packed_attention(q, k, v, mask, is_causal=causal)
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("storage", ["packed", "seeded"])
@pytest.mark.parametrize("bits", [1, 4])
def test_dropout_matches_eager_with_the_same_mask(bits: int, storage: str) -> None:
    q, k, v = qkv()
    keep = masks()["bool"]
    torch.manual_seed(9)
    ref = eager_attention(q, k, v, keep, p=0.3)
    ref_state = torch.get_rng_state()
    torch.manual_seed(9)
    out = packed_attention(q, k, v, PackedBool(keep), dropout_p=0.3, bits=bits, storage=storage)
    assert torch.equal(torch.get_rng_state(), ref_state)  # same draw: the same dropout mask
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)


def test_fully_masked_rows_give_zeros_like_sdpa() -> None:
    q, k, v = qkv()
    keep = torch.ones(B, 1, SQ, SK, dtype=torch.bool)
    keep[:, :, 1] = False
    out = packed_attention(q, k, v, keep, dropout_p=0.2)
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q, k, v, keep)
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1])) and torch.equal(ref[:, :, 1], out[:, :, 1])
    assert all(torch.isfinite(g).all() for g in grads(out, (q, k, v)))


def test_padding_causal_packed_mask_equals_bool_mask() -> None:
    q, k, v = qkv(SK, SK)
    attention_mask = torch.tensor([[1] * SK, [1] * (SK - 2) + [0, 0]])
    packed = padding_causal_mask(attention_mask, SK, SK, causal=True)
    ref = attention_mask.bool()[:, None, None, :] & torch.ones(SK, SK, dtype=torch.bool).tril()
    torch.testing.assert_close(packed_attention(q, k, v, packed), packed_attention(q, k, v, ref), rtol=0, atol=0)


@pytest.mark.parametrize("bits", WIDTHS)
def test_saves_probs_once_and_the_mask_packed(bits: int) -> None:
    q, k, v = qkv(16, 24, torch.float32)
    out, census = saved_bytes(packed_attention, q, k, v, dropout_p=0.1, is_causal=True, bits=bits)
    scores = B * H * 16 * 24
    assert census.packed_bytes == packed_bytes((scores,), bits)
    assert census.bytes_by_dtype[torch.float32] == 4 * (q.numel() + k.numel() + v.numel() + scores)
    _, eager = saved_bytes(eager_attention, q, k, v, p=0.1, causal=True)
    assert eager.bytes_by_dtype[torch.float32] == 4 * (q.numel() + k.numel() + v.numel() + 3 * scores)
    out.sum().backward()


def test_eval_saves_no_mask_and_draws_nothing() -> None:
    q, k, v = qkv()
    state = torch.get_rng_state()
    _, census = saved_bytes(packed_attention, q, k, v, dropout_p=0.5, training=False)
    assert census.packed_bytes == 0 and torch.equal(torch.get_rng_state(), state)


def test_p_one_gives_zeros() -> None:
    q, k, v = qkv()
    assert torch.equal(packed_attention(q, k, v, dropout_p=1.0), torch.zeros(B, H, SQ, D, dtype=q.dtype))


def test_bad_inputs_raise_clear_errors() -> None:
    q, k, v = qkv()
    with pytest.raises(PackedBoolValueError, match="query has 3 heads, key 1"):
        packed_attention(q, k[:, :1], v[:, :1])
    with pytest.raises(PackedBoolValueError, match="4-D"):
        packed_attention(q[0], k[0], v[0])
    with pytest.raises(PackedBoolValueError, match="shape mismatch"):
        packed_attention(q, k, v[:, :, :2])
    with pytest.raises(PackedBoolTypeError, match="torch.int64"):
        packed_attention(q, k, v, torch.ones(SQ, SK, dtype=torch.long))
    with pytest.raises(PackedBoolTypeError, match="query"):
        packed_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="between 0 and 1"):
        packed_attention(q, k, v, dropout_p=2.0)
