"""Every op handled on packed bytes, against the same op on the bool tensor."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bittensor_core
from bittensor_core import PackedBool

from .strategies import MODES, WIDTHS, masks, nonempty_shapes

BINARY = [
    operator.and_,
    operator.or_,
    operator.xor,
    operator.eq,
    operator.ne,
    torch.logical_and,
    torch.logical_or,
    torch.logical_xor,
]
IN_PLACE = [operator.iand, operator.ior, operator.ixor]


def _pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) < 0.5, torch.rand(shape, generator=gen) < 0.5


def _packed_equal(result: object, expected: torch.Tensor) -> None:
    assert isinstance(result, PackedBool), "expected the op to stay packed"
    assert result.shape == expected.shape
    assert torch.equal(result.unpack(), expected)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 13), max_size=3).map(tuple),
    seed=st.integers(0, 999),
    bits=st.sampled_from(WIDTHS),
    op=st.sampled_from(BINARY),
)
def test_binary_ops_stay_packed(shape: tuple[int, ...], seed: int, bits: int, op) -> None:
    m, n = _pair(shape, seed)
    _packed_equal(op(PackedBool(m, bits=bits), PackedBool(n, bits=bits)), op(m, n))


@settings(max_examples=30, deadline=None)
@given(
    shape=nonempty_shapes,
    seed=st.integers(0, 999),
    bits=st.sampled_from(WIDTHS),
    op=st.sampled_from(IN_PLACE),
    mode=st.sampled_from(MODES),
)
def test_in_place_binary_ops(shape: tuple[int, ...], seed: int, bits: int, op, mode: str) -> None:
    m, n = _pair(shape, seed)
    a = PackedBool(m, bits=bits, unpack=mode)
    a.unpack()  # fill the cache in cached mode: the op must invalidate it
    storage = a.packed
    a = op(a, PackedBool(n, bits=bits))
    _packed_equal(a, op(m.clone(), n))
    assert a.packed is storage


@settings(max_examples=40, deadline=None)
@given(mask=masks(), bits=st.sampled_from(WIDTHS))
def test_invert_and_reductions(mask: torch.Tensor, bits: int) -> None:
    pb = PackedBool(mask, bits=bits)
    _packed_equal(~pb, ~mask)
    _packed_equal(torch.logical_not(pb), ~mask)
    assert torch.equal(pb.sum(), mask.sum()) and pb.sum().dtype == torch.int64
    assert torch.equal(pb.count_nonzero(), mask.count_nonzero())
    assert torch.equal(pb.any(), mask.any()) and torch.equal(pb.all(), mask.all())
    assert torch.equal(pb.sum(dtype=torch.float32), mask.sum(dtype=torch.float32))
    inverted = pb.clone()
    inverted.logical_not_()
    _packed_equal(inverted, ~mask)


def test_reductions_use_popcount_not_unpack(monkeypatch: pytest.MonkeyPatch) -> None:
    pb = PackedBool(torch.rand(6, 30) < 0.5)
    monkeypatch.setattr(PackedBool, "unpack", lambda *a, **k: pytest.fail("unpacked"))
    pb.sum(), pb.any(), pb.all(), pb.count_nonzero(), pb & pb, ~pb, pb[1:3], pb.clone()


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("mode", MODES)
def test_shape_ops_on_leading_dims(bits: int, mode: str) -> None:
    m = torch.rand(4, 3, 2, 11) < 0.5
    pb = PackedBool(m, bits=bits, unpack=mode)
    idx = torch.tensor([3, 0, 0])
    cases = {
        "select": (lambda t: t[2], lambda t: t.select(1, -1)),
        "slice": (lambda t: t[1:3], lambda t: t[:, ::2]),
        "narrow": (lambda t: t.narrow(2, 1, 1),),
        "index": (lambda t: t[idx], lambda t: t[:, torch.tensor([True, False, True])]),
        "view": (lambda t: t.view(12, 2, 11), lambda t: t.reshape(-1, 11), lambda t: t.flatten(0, 2)),
        "unsqueeze": (lambda t: t.unsqueeze(0), lambda t: t.unsqueeze(-2)),
        "squeeze": (lambda t: t[:, :1].squeeze(1), lambda t: t[:1].squeeze()),
        "transpose": (lambda t: t.transpose(0, 2), lambda t: t.permute(2, 0, 1, 3)),
        "expand": (lambda t: t[:, :1].expand(4, 5, 2, 11),),
        "cat": (lambda t: torch.cat([t, t[:1]]), lambda t: torch.cat([t, t], dim=-2)),
        "stack": (lambda t: torch.stack([t, t]), lambda t: torch.stack([t, t], dim=3)),
        "split": (lambda t: torch.stack(t.split(1, dim=1), 0), lambda t: torch.stack(t.unbind(0))),
    }
    for name, fns in cases.items():
        for fn in fns:
            result = fn(pb)
            assert isinstance(result, PackedBool), name
            assert torch.equal(result.unpack(), fn(m)), name
            assert result.bits == bits and result.unpack_mode == mode


def test_ops_touching_the_last_dim_fall_back() -> None:
    """Views torch would alias become fallback views (writes reach the parent); others are plain."""
    m = torch.rand(4, 11) < 0.5
    views = (
        lambda t: t[..., 3],
        lambda t: t[:, 2:5],
        lambda t: t.t(),
        lambda t: t.view(44),
        lambda t: t.unsqueeze(-1),
    )
    for fn in views:
        pb, expected = PackedBool(m), m.clone()
        result = fn(pb)
        assert isinstance(result, PackedBool) and result._view_of is not None
        assert torch.equal(result.unpack(), fn(m))
        result.logical_not_()
        fn(expected).logical_not_()
        assert torch.equal(pb.unpack(), expected)
    for fn in (lambda t: torch.cat([t, t], dim=1), lambda t: t.flip(-1)):
        result = fn(PackedBool(m))
        assert type(result) is torch.Tensor and torch.equal(result, fn(m))


def test_fallback_ops_equal_the_bool_tensor() -> None:
    m = torch.rand(5, 13) < 0.5
    x = torch.randn(5, 13)
    pb = PackedBool(m)
    assert torch.equal(x * pb, x * m)
    assert torch.equal(torch.where(pb, x, -x), torch.where(m, x, -x))
    assert torch.equal(x.masked_fill(pb, 7.0), x.masked_fill(m, 7.0))
    assert torch.equal(pb.float(), m.float()) and torch.equal(pb.long(), m.long())
    assert torch.equal(pb & m, m & m) and torch.equal(pb == m, m == m)
    assert torch.equal(x[pb], x[m])
    assert pb.tolist() == m.tolist() and bool(pb[0, 0]) == bool(m[0, 0])
    assert "PackedBool(bits=1" in repr(pb) and "True" in repr(pb)
    assert torch.equal(pb.sum(dim=1), m.sum(dim=1)) and torch.equal(pb.any(dim=0), m.any(dim=0))


@pytest.mark.parametrize("mode", MODES)
def test_fallback_in_place_ops_write_back(mode: str) -> None:
    m = torch.rand(3, 10) < 0.5
    pb = PackedBool(m, unpack=mode)
    pb.unpack()
    storage = pb.packed
    result = pb.masked_fill_(torch.eye(3, 10, dtype=torch.bool), True)
    assert result is pb and pb.packed is storage
    assert torch.equal(pb.unpack(), m.masked_fill(torch.eye(3, 10, dtype=torch.bool), True))
    pb[:, 4] = False
    assert not pb.unpack()[:, 4].any()
    pb.zero_()
    assert not pb.any()


def test_copy_clone_detach_to() -> None:
    m, n = _pair((6, 9), 0)
    a, b = PackedBool(m), PackedBool(n)
    clone = a.clone()
    assert clone.packed.data_ptr() != a.packed.data_ptr() and torch.equal(clone.unpack(), m)
    assert a.detach().packed is a.packed
    assert torch.equal(a.to("cpu").unpack(), m) and torch.equal(a.cpu().unpack(), m)
    assert a.contiguous() is a
    a.copy_(b)
    assert torch.equal(a.unpack(), n)
    a.copy_(m)  # from a plain bool tensor
    assert torch.equal(a.unpack(), m)
    wide = PackedBool(n, bits=4)
    a.copy_(wide)  # across widths
    assert torch.equal(a.unpack(), n) and a.bits == 1
    plain = torch.zeros(6, 9, dtype=torch.bool)
    plain.copy_(a)
    assert torch.equal(plain, n)


def test_mixed_devices_and_bad_shapes_raise_like_torch() -> None:
    a = PackedBool(torch.rand(4, 9) < 0.5)
    b = PackedBool(torch.rand(3, 9) < 0.5)
    with pytest.raises(RuntimeError, match="size of tensor"):
        _ = a & b
    with pytest.raises(RuntimeError):
        torch.cat([a, PackedBool(torch.rand(4, 8) < 0.5)])
    meta = PackedBool(torch.empty(4, 9, dtype=torch.bool, device="meta"))
    with pytest.raises((RuntimeError, NotImplementedError)):
        (a & meta).unpack()  # CPU with meta is an error in torch too


def test_broadcasting_between_packed_falls_back_correctly() -> None:
    m, n = torch.rand(4, 9) < 0.5, torch.rand(1, 9) < 0.5
    assert torch.equal(PackedBool(m) & PackedBool(n), m & n)


def test_every_registered_handler_is_exercised() -> None:
    names = {op.name() for op in PackedBool.handlers}
    for expected in (
        "aten::bitwise_and.Tensor",
        "aten::select.int",
        "aten::cat",
        "aten::sum",
        "aten::_to_copy",
        "aten::copy_",
        "aten::index.Tensor",
        "aten::view",
    ):
        assert any(n.startswith(expected) for n in names), expected


@pytest.fixture
def on_fallback():
    """Set `PackedBool.on_fallback` for one test and restore it afterwards."""
    before = PackedBool.on_fallback
    yield lambda mode: setattr(PackedBool, "on_fallback", mode)
    PackedBool.on_fallback = before


def test_on_fallback_warns_or_raises_naming_the_op(on_fallback) -> None:
    pb = PackedBool(torch.rand(3, 10) < 0.5)
    on_fallback("warn")
    with pytest.warns(bittensor_core.PackedBoolFallbackWarning, match=r"aten\.t\.default"):
        t = pb.t()
    assert torch.equal(t.unpack(), pb.unpack().t())  # the result is unchanged
    on_fallback("raise")
    with pytest.raises(bittensor_core.UnpackFallbackError, match=r"aten\.cumsum\.default"):
        pb.cumsum(0)
    assert torch.equal((pb & pb).unpack(), pb.unpack())  # a packed-bytes handler: no alert
    on_fallback("loud")
    with pytest.raises(bittensor_core.PackedBoolValueError, match="on_fallback='loud'"):
        pb.cumsum(0)


def test_on_fallback_is_silent_by_default() -> None:
    assert PackedBool.on_fallback is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(
            PackedBool(torch.ones(2, 3, dtype=torch.bool)).t().unpack(), torch.ones(3, 2, dtype=torch.bool)
        )


def test_on_fallback_default_comes_from_the_environment() -> None:
    code = "import torch, bittensor_core as bc; bc.PackedBool(torch.ones(2, 3, dtype=torch.bool)).t()"
    env = {**os.environ, "PACKEDBOOL_ON_FALLBACK": "raise"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "UnpackFallbackError" in done.stderr and "aten.t.default" in done.stderr
