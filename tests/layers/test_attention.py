"""packed_attention: F.scaled_dot_product_attention's results bit for bit, keeping no (B, H, Sq, Sk) float."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.checkpoint import checkpoint

from bittensor_core import PackedBool, PackedBoolTypeError, PackedBoolValueError
from layers import MaskStorage, packed_attention, padding_causal_mask
from layers.attention import DropoutSpec, attention_backend
from layers.attention_core import sdpa_math

from .helpers import bits_equal, leaf

B, H, SQ, SK, D = 2, 4, 9, 13, 8


def qkv(
    dtype: torch.dtype = torch.float32, kv_heads: int = H, sq: int = SQ, sk: int = SK
) -> tuple[torch.Tensor, ...]:
    return (
        leaf(B, H, sq, D, dtype=dtype),
        leaf(B, kv_heads, sk, D, dtype=dtype, seed=1),
        leaf(B, kv_heads, sk, D, dtype=dtype, seed=2),
    )


def keep_mask() -> torch.Tensor:
    keep = torch.rand(B, 1, SQ, SK, generator=torch.Generator().manual_seed(3)) > 0.3
    keep[:, :, 2] = False  # a fully masked row: SDPA gives zeros there
    return keep


def step(fn, q, k, v, seed: int = 5, **kwargs):
    """Output, gradients and the generator state after one forward/backward from `seed`."""
    torch.manual_seed(seed)
    out = fn(q, k, v, **kwargs)
    return out, torch.autograd.grad(out.square().sum(), (q, k, v)), torch.get_rng_state()


def assert_same(a: tuple, b: tuple) -> None:
    assert bits_equal(a[0], b[0])
    assert all(bits_equal(x, y) for x, y in zip(a[1], b[1], strict=True))
    assert torch.equal(a[2], b[2])  # the same generator calls: the same dropout mask


CASES = {
    "no-mask": dict(dropout_p=0.3),
    "causal": dict(dropout_p=0.3, is_causal=True),
    "bool-mask": dict(dropout_p=0.3, attn_mask=keep_mask()),
    "float-mask": dict(
        dropout_p=0.3, attn_mask=torch.randn(B, H, SQ, SK, generator=torch.Generator().manual_seed(4))
    ),
    "2d-mask": dict(dropout_p=0.3, attn_mask=keep_mask()[0, 0]),
    "scale": dict(dropout_p=0.3, scale=0.37),
    "negative-scale": dict(dropout_p=0.3, scale=-0.37),
    "p=0.123": dict(dropout_p=0.123),  # a p where 1 / (1 - p) rounds differently in float32
    "p=1": dict(dropout_p=1.0),
    "eval": dict(dropout_p=0.3, training=False),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_bit_identical_to_sdpa(case: str, dtype: torch.dtype) -> None:
    kwargs = dict(CASES[case])
    q, k, v = qkv(dtype)
    mask = kwargs.get("attn_mask")
    if mask is not None and mask.is_floating_point():
        kwargs["attn_mask"] = mask.to(dtype)
    training = kwargs.pop("training", True)
    reference = dict(kwargs, dropout_p=kwargs["dropout_p"] if training else 0.0)
    assert_same(
        step(F.scaled_dot_product_attention, q, k, v, **reference),
        step(packed_attention, q, k, v, training=training, **kwargs),
    )


@pytest.mark.parametrize(
    "options", [dict(bits=4), dict(storage="seeded"), dict(unpack="cached"), dict(packed_mask=True)]
)
def test_storage_options_change_nothing(options: dict) -> None:
    q, k, v = qkv()
    keep = keep_mask()
    mask = PackedBool(keep) if options.pop("packed_mask", False) else keep
    assert_same(
        step(F.scaled_dot_product_attention, q, k, v, attn_mask=keep, dropout_p=0.2),
        step(packed_attention, q, k, v, attn_mask=mask, dropout_p=0.2, **options),
    )


def test_transposed_inputs_with_head_dim_equal_to_keys_match_sdpa() -> None:
    """Hugging Face's q is a transposed view; with Sk == D it has the probabilities' shape, and the
    mask must still be drawn in the probabilities' (contiguous) layout."""
    q, k, v = (leaf(B, SK, H, SK, seed=i).transpose(1, 2) for i in range(3))
    assert_same(
        step(F.scaled_dot_product_attention, q, k, v, dropout_p=0.2),
        step(packed_attention, q, k, v, dropout_p=0.2),
    )


@pytest.mark.parametrize("storage", ["packed", "seeded"])
def test_fast_sampler_backward_replays_the_forward_mask(storage: str) -> None:
    """sampler="fast" draws other numbers than SDPA; backward (recomputed) must use the very mask the
    forward drew: equal to plain autograd through the math path with that mask."""
    q, k, v = qkv()
    got = step(packed_attention, q, k, v, dropout_p=0.3, sampler="fast", storage=storage)

    def plain(q, k, v, dropout_p):
        spec = DropoutSpec(dropout_p, (B, H, SQ, SK), MaskStorage(sampler="fast"))
        return sdpa_math(q, k, v, None, spec.dropout(spec.draw(q)))

    assert_same(step(plain, q, k, v, dropout_p=0.3), got)


def test_grouped_query_attention_matches_sdpa() -> None:
    q, k, v = qkv(kv_heads=2)
    assert_same(
        step(F.scaled_dot_product_attention, q, k, v, dropout_p=0.2, enable_gqa=True),
        step(packed_attention, q, k, v, dropout_p=0.2, enable_gqa=True),
    )


def _retained(fn) -> tuple[torch.Tensor, int]:
    """fn()'s output and the bytes created during fn that are still alive after it (output included):
    what the autograd graph keeps for backward."""
    tracker = MemTracker()
    with tracker:
        out = fn()
        snapshot = tracker.get_tracker_snapshot()
    return out, sum(s["Total"] for s in snapshot.values())


@pytest.mark.parametrize("storage, mask_bits", [("packed", 1), ("seeded", 0)])
def test_keeps_no_score_sized_float(storage: str, mask_bits: int) -> None:
    """SDPA's math path keeps 3 float (B, H, S, S) tensors; packed attention keeps the 1-bit mask
    (none when seeded) and O(S) tensors: no score-sized float at all."""
    s = 256
    q, k, v = qkv(sq=s, sk=s)
    scores = B * H * s * s
    out, stock = _retained(lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1))
    assert stock >= 3 * 4 * scores
    out, packed = _retained(lambda: packed_attention(q, k, v, dropout_p=0.1, storage=storage))
    linear = 4 * (q.numel() + k.numel() + v.numel())  # output and O(S) temporaries
    assert packed <= scores * mask_bits // 8 + linear
    out.sum().backward()


def test_compiles_in_one_graph_with_equal_results() -> None:
    q, k, v = qkv()
    compiled = torch.compile(packed_attention, fullgraph=True, backend="aot_eager")
    assert_same(
        step(compiled, q, k, v, dropout_p=0.2, is_causal=True),
        step(packed_attention, q, k, v, dropout_p=0.2, is_causal=True),
    )


def test_head_dim_zero_matches_sdpa() -> None:
    q, k, v = (torch.randn(B, H, 5, 0) for _ in range(3))
    torch.manual_seed(0)
    expected = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
    torch.manual_seed(0)
    assert bits_equal(packed_attention(q, k, v, dropout_p=0.1), expected)


def test_calls_sdpa_itself_where_a_fused_kernel_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torch's checks say a fused CUDA kernel takes the call, packed attention is the stock call
    (the kernel regenerates its dropout mask: nothing to pack); the mask goes unpacked."""
    import layers.attention as attention

    calls = []
    monkeypatch.setattr(attention, "attention_backend", lambda *args, **kwargs: "sdpa")
    monkeypatch.setattr(
        attention.F, "scaled_dot_product_attention", lambda *args, **kwargs: calls.append(args)
    )
    q, k, v = qkv()
    keep = keep_mask()
    packed_attention(q, k, v, PackedBool(keep), dropout_p=0.2)
    (args,) = calls
    assert args[4] == 0.2 and torch.equal(args[3], keep)


def test_no_fused_kernel_route_on_cpu() -> None:
    """The CUDA route (fused SDPA kernels) is decided by torch's can_use_*_attention; never on CPU."""
    q, k, v = qkv(torch.float16)
    assert attention_backend(q, k, v, None, 0.1, False) == "packed"


def test_bad_inputs_raise_clear_errors() -> None:
    q, k, v = qkv()
    with pytest.raises(PackedBoolValueError, match="query has 4 heads, key 1"):
        packed_attention(q, k[:, :1], v[:, :1])
    with pytest.raises(PackedBoolValueError, match="enable_gqa=True"):
        packed_attention(q, k[:, :3], v[:, :3], enable_gqa=True)
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
    with pytest.raises(PackedBoolValueError, match="attn_mask is on meta"):
        packed_attention(q, k, v, torch.ones(SQ, SK, dtype=torch.bool, device="meta"), dropout_p=0.1)
    with pytest.raises(PackedBoolValueError, match="not both"):
        packed_attention(q, k, v, keep_mask(), is_causal=True)


def test_padding_causal_mask_rejects_non_integer_lengths() -> None:
    with pytest.raises(PackedBoolTypeError, match="q_len must be an int, got 2.5"):
        padding_causal_mask(None, 2.5, 4, causal=True)
    with pytest.raises(PackedBoolTypeError, match="kv_len must be an int"):
        padding_causal_mask(None, 2, True, causal=True)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_inside_gradient_checkpointing_the_core_runs_twice_with_identical_results(
    monkeypatch: pytest.MonkeyPatch, use_reentrant: bool
) -> None:
    """A checkpointed layer already recomputes its attention: the core runs in forward and in that
    recompute only (not a third time under a checkpoint of its own), with the same results."""
    import layers.attention as attention

    runs = []
    core = attention._core

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        runs.append(1)
        return core(*args, **kwargs)

    monkeypatch.setattr(attention, "_core", counted)
    q, k, v = (torch.randn(2, 3, 8, 4, requires_grad=True) for _ in range(3))

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return packed_attention(q, k, v, dropout_p=0.3)

    results = []
    for outer in (False, True):
        torch.manual_seed(0)
        out = checkpoint(attend, q, k, v, use_reentrant=use_reentrant) if outer else attend(q, k, v)
        out.square().sum().backward()  # reentrant checkpoints refuse autograd.grad
        results.append((out, tuple(t.grad for t in (q, k, v))))
        q.grad = k.grad = v.grad = None
        assert len(runs) == 2, runs  # forward + one recompute, either way
        runs.clear()
    (a, grads_a), (b, grads_b) = results
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(grads_a, grads_b, strict=True))
