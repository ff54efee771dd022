"""The attention and mask functions registered with transformers, checked against transformers' own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bittensor_core import PackedBool
from bittensor_core.errors import PackedBoolValueError
from layers import MaskStorage

transformers = pytest.importorskip("transformers")

from transformers import AttentionInterface, AttentionMaskInterface  # noqa: E402
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402
from transformers.masking_utils import (  # noqa: E402
    bidirectional_mask_function,
    causal_mask_function,
    sdpa_mask,
    sliding_window_causal_mask_function,
)
from transformers.models.llama.modeling_llama import eager_attention_forward  # noqa: E402

from integrations.hf_attention import (  # noqa: E402
    packed_attention_forward,
    packed_mask,
    register_attention,
    registry_name,
)


class _Attention(nn.Module):
    """The attributes transformers' attention functions read from the calling module."""

    def __init__(self, groups: int = 1, is_causal: bool = True) -> None:
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, is_causal


def _padding(batch: int, kv: int) -> torch.Tensor:
    mask = torch.ones(batch, kv, dtype=torch.bool)
    mask[0, kv - 3 :] = False
    return mask


MASK_CASES = {
    "causal+padding": dict(q_length=12, kv_length=12, mask_function=causal_mask_function, pad=True),
    "bidirectional+padding": dict(q_length=12, kv_length=12, mask_function=bidirectional_mask_function, pad=True),
    "sliding-window": dict(q_length=12, kv_length=12, mask_function=sliding_window_causal_mask_function(4)),
    "decode-step": dict(q_length=1, kv_length=12, q_offset=11, mask_function=causal_mask_function, pad=True),
    "causal-no-padding": dict(q_length=12, kv_length=12, mask_function=causal_mask_function),
    "bidirectional-no-padding": dict(
        q_length=12, kv_length=12, mask_function=bidirectional_mask_function, allow_is_bidirectional_skip=True
    ),
}


@pytest.mark.parametrize("case", MASK_CASES)
@pytest.mark.parametrize("bits", [1, 4])
def test_mask_function_is_sdpa_mask_packed(case: str, bits: int) -> None:
    kwargs = dict(MASK_CASES[case])
    pad = kwargs.pop("pad", False)
    kwargs |= dict(batch_size=2, attention_mask=_padding(2, kwargs["kv_length"]) if pad else None)
    expected = sdpa_mask(**kwargs)
    got = packed_mask(**kwargs, options=MaskStorage(bits=bits))
    if expected is None:  # no padding: is_causal / no mask at all, as with SDPA
        assert got is None
        return
    assert isinstance(got, PackedBool) and got.bits == bits
    assert got.shape == expected.shape == (2, 1, kwargs["q_length"], kwargs["kv_length"])
    assert torch.equal(got.unpack(), expected)


@pytest.mark.parametrize(
    "groups, q_len, kv_len, mask",
    [(1, 8, 8, "none"), (2, 8, 8, "bool"), (2, 8, 8, "packed"), (4, 1, 9, "none"), (1, 8, 8, "float"), (2, 8, 12, "none")],
)
def test_matches_transformers_sdpa_function_without_dropout(groups: int, q_len: int, kv_len: int, mask: str) -> None:
    """Same arguments, same results as transformers' SDPA attention function (GQA, causal, masks)."""
    torch.manual_seed(0)
    heads, kv_heads, d = 4, 4 // groups, 8
    q = torch.randn(2, heads, q_len, d, dtype=torch.float64)
    k, v = (torch.randn(2, kv_heads, kv_len, d, dtype=torch.float64) for _ in range(2))
    keep = torch.rand(2, 1, q_len, kv_len) < 0.8
    keep[..., 0] = True
    attn_mask = {
        "none": None,
        "bool": keep,
        "packed": PackedBool(keep),
        "float": torch.zeros(keep.shape, dtype=torch.float64).masked_fill(~keep, float("-inf")),
    }[mask]
    module = _Attention(groups).eval()
    plain = attn_mask.unpack() if isinstance(attn_mask, PackedBool) else attn_mask
    expected, _ = sdpa_attention_forward(module, q, k, v, plain, dropout=0.0, scaling=0.3)
    got, weights = packed_attention_forward(module, q, k, v, attn_mask, dropout=0.0, scaling=0.3)
    assert weights is None
    assert got.shape == (2, q_len, heads, d) and got.is_contiguous()
    torch.testing.assert_close(got, expected)


def test_dropout_draws_the_same_mask_as_eager_attention() -> None:
    """Training: the same random stream as transformers' eager attention, bit for bit (GQA module)."""
    module = _Attention(groups=2).train()
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 16, 8, generator=gen, requires_grad=True)
    k, v = (torch.randn(2, 2, 16, 8, generator=gen, requires_grad=True) for _ in range(2))
    keep = torch.ones(16, 16, dtype=torch.bool).tril().expand(2, 1, 16, 16)
    bias = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    outs, grads = [], []
    for fn, mask in ((eager_attention_forward, bias), (packed_attention_forward, PackedBool(keep))):
        torch.manual_seed(7)
        out, _ = fn(module, q, k, v, mask, dropout=0.25, scaling=8**-0.5)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_eval_module_draws_nothing() -> None:
    module = _Attention().eval()
    q = k = v = torch.randn(1, 2, 8, 4)
    state = torch.get_rng_state()
    first, _ = packed_attention_forward(module, q, k, v, None, dropout=0.5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, packed_attention_forward(module, q, k, v, None, dropout=0.5)[0])


@pytest.mark.parametrize("kwarg", ["s_aux", "softcap", "position_bias"])
def test_unsupported_attention_extras_raise(kwarg: str) -> None:
    q = k = v = torch.randn(1, 2, 4, 4)
    with pytest.raises(PackedBoolValueError, match=f"{kwarg}.*attention=False"):
        packed_attention_forward(_Attention(), q, k, v, None, **{kwarg: torch.ones(2)})
    packed_attention_forward(_Attention(), q, k, v, None, **{kwarg: None})  # None means absent


def test_registry_names_and_registration() -> None:
    assert registry_name(MaskStorage()) == "packedbool"
    assert registry_name(MaskStorage(bits=2, unpack="cached", storage="seeded"), flash=False) == (
        "packedbool-b2-cached-seeded-nofa"
    )
    assert registry_name(MaskStorage(sampler="fast")) == "packedbool-fast"
    for options in (MaskStorage(), MaskStorage(bits=8)):
        name = register_attention(options)
        assert name == register_attention(options)  # idempotent
        assert name in AttentionInterface() and name in AttentionMaskInterface()
        assert not any(word in name for word in ("sdpa", "flash", "flex", "|"))
