"""Aliasing and mutation: views write through, copies do not, nothing is silently lost.

Regression tests for the defects found against op_db (issue 11) and the review (issue 13 #6).
"""

from __future__ import annotations

import pytest
import torch

from bittensor_core import PackedBool, PackedBoolError

from .strategies import MODES, WIDTHS


def _mask(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5


def test_plain_tensor_indexed_by_a_packed_mask() -> None:
    x, m = torch.randn(3, 4, 5), _mask(3, 4)
    assert torch.equal(x[PackedBool(m)], x[m])
    grad_src = torch.randn(int(m.sum()), 5, requires_grad=True)
    out = torch.zeros(3, 4, 5).index_put((PackedBool(m),), grad_src)
    out.sum().backward()  # index_put's backward indexes the gradient with the mask
    assert torch.equal(grad_src.grad, torch.ones_like(grad_src))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "make",
    [
        lambda t: t[::2].contiguous(),
        lambda t: t[1:3].transpose(0, 1).contiguous(),
        lambda t: t[::2].to(memory_format=torch.contiguous_format),  # torch: the view itself
        lambda t: t[1:3].transpose(0, 1).to(memory_format=torch.contiguous_format),
        lambda t: t[::2].clone(),
    ],
)
def test_copies_and_views_of_views_alias_as_in_torch(make, mode: str) -> None:
    m = torch.zeros(4, 3, 8, dtype=torch.bool)
    pb = PackedBool(m, unpack=mode)
    pb.unpack()
    for t in (pb, m):
        make(t).logical_not_()
    assert torch.equal(pb.unpack(), m)


def test_strides_tell_the_truth() -> None:
    pb = PackedBool(_mask(4, 3, 10))
    m = pb.unpack()
    for fn in (
        lambda t: t,
        lambda t: t[::2],
        lambda t: t.transpose(0, 1),
        lambda t: t[:, 1:],
        lambda t: t[1],
        lambda t: t[:, :1].expand(4, 5, 10),
    ):
        assert fn(pb).stride() == fn(m).stride()
        assert fn(pb).is_contiguous() == fn(m).is_contiguous()
    for t in (pb, m):  # torch's view errors carry over to views of views
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            t.transpose(0, 1).view(12, 10)
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            t.transpose(0, 2)[2:4].view(-1, 3)
    assert torch.equal(pb.transpose(0, 1).reshape(12, 10).unpack(), m.transpose(0, 1).reshape(12, 10))


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("mode", MODES)
def test_writes_through_views_reach_the_parent(bits: int, mode: str) -> None:
    writes = {
        "slice last dim": lambda t: t[..., 0:3].fill_(True),
        "flatten": lambda t: t.flatten().zero_(),
        "select last dim": lambda t: t[:, :, 4].logical_not_(),
        "transpose": lambda t: t.transpose(1, 2)[0].fill_(True),
        "view of a view": lambda t: t.transpose(0, 2)[2:4].unsqueeze(0)[0, 1].logical_not_(),
        "leading select": lambda t: t[1].fill_(True),
        "setitem on a view": lambda t: t.transpose(0, 2).__setitem__(0, True),
        "masked_fill_ on a view": lambda t: t.unflatten(-1, (2, 5)).masked_fill_(t[0, 0, :5].clone(), True),
    }
    for name, write in writes.items():
        m = _mask(3, 4, 10, seed=1)
        pb = PackedBool(m, bits=bits, unpack=mode)
        pb.unpack()  # a cache to go stale
        write(pb)
        write(m)
        assert torch.equal(pb.unpack(), m), name
        assert torch.equal(pb.unpack(fresh=True), m), name


def test_view_sees_later_writes_to_its_parent() -> None:
    pb = PackedBool(torch.zeros(3, 10, dtype=torch.bool), unpack="cached")
    col, row = pb[:, 2], pb[1]
    col.unpack(), row.unpack()
    pb.logical_not_()
    assert col.all() and row.all()
    assert torch.equal(
        PackedBool(torch.zeros(1, 10, dtype=torch.bool))[..., 0:3][0].unpack(),
        torch.zeros(3, dtype=torch.bool),
    )
    pb1d = PackedBool(torch.zeros(10, dtype=torch.bool))
    pb1d[0].fill_(True)
    assert pb1d.unpack().tolist() == [True] + [False] * 9


def test_overlapping_view_writes_are_refused() -> None:
    pb = PackedBool(torch.zeros(2, 10, dtype=torch.bool))
    windows = pb.unfold(1, 4, 2)  # windows share elements
    assert torch.equal(windows.unpack(), pb.unpack().unfold(1, 4, 2))
    with pytest.raises(PackedBoolError, match="overlap"):
        windows.logical_not_()
    assert not pb.any()


@pytest.mark.parametrize("mode", MODES)
def test_out_written_through_a_view_of_out(mode: str) -> None:
    o = PackedBool(torch.zeros(4, 6, dtype=torch.bool), unpack=mode)
    o.unpack()
    torch.kron(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool), out=o)
    assert o.unpack().all() and o.unpack(fresh=True).all()


@pytest.mark.parametrize("mode", MODES)
def test_out_lists_are_written_back(mode: str) -> None:
    m = _mask(4, 6)
    outs = [PackedBool(torch.zeros(6, dtype=torch.bool), unpack=mode) for _ in range(4)]
    for o in outs:
        o.unpack()
    torch.unbind_copy(m, out=outs)
    assert all(torch.equal(o.unpack(), row) for o, row in zip(outs, m, strict=True))
    halves = [PackedBool(torch.zeros(2, 6, dtype=torch.bool), unpack=mode) for _ in range(2)]
    torch.split_copy(m, 2, out=halves)
    assert all(torch.equal(h.unpack(), part) for h, part in zip(halves, m.split(2), strict=True))


@pytest.mark.parametrize(
    "op",
    [
        lambda t: t.squeeze_(),
        lambda t: t.unsqueeze_(0),
        lambda t: t.t_(),
        lambda t: t.transpose_(0, 1),
        lambda t: t.resize_(2),
        lambda t: t.as_strided_((1,), (1,)),
    ],
)
def test_shape_changing_in_place_ops_are_refused(op) -> None:
    m = torch.ones(1, 2, dtype=torch.bool)
    pb = PackedBool(m)
    with pytest.raises(PackedBoolError, match=r"aten\.\w+_.*in place"):
        op(pb)
    assert pb.shape == (1, 2) and torch.equal(pb.unpack(), m)
    for bits in WIDTHS:  # an out= torch would resize
        with (
            pytest.raises(PackedBoolError, match=r"aten\.logical_not\.out.*in place"),
            pytest.warns(UserWarning),
        ):
            torch.logical_not(torch.ones(3, 3, dtype=torch.bool), out=PackedBool(m, bits=bits))
    same = PackedBool(torch.ones(2, 2, dtype=torch.bool))
    assert same.squeeze_() is same and same.resize_(2, 2) is same  # shape unchanged: fine


def test_cached_mode_never_hands_out_its_cache() -> None:
    m = _mask(4, 6)
    for op in (
        lambda t: t.unsafe_split(2)[0],
        lambda t: t.unsafe_chunk(2, 1)[0],
        lambda t: torch.ops.aten._unsafe_view(t, [24]),
    ):
        pb = PackedBool(m, unpack="cached")
        pb.unpack()
        part = op(pb)
        part.logical_not_() if isinstance(part, PackedBool) else part.logical_not_()
        assert torch.equal(pb.unpack(), pb.unpack(fresh=True))


def test_non_bool_views_and_storage_ops_on_views_are_refused() -> None:
    pb = PackedBool(_mask(3, 8))
    with pytest.raises(PackedBoolError, match="packed bits"):
        pb.view(torch.uint8)
    assert torch.equal(pb.as_strided((2, 2), (8, 1)).unpack(), pb.unpack().as_strided((2, 2), (8, 1)))
    for view in (pb[1], pb.t()):  # torch would read the parent's storage: refuse, not guess
        with pytest.raises(PackedBoolError, match=r"aten\.as_strided.*pb\.clone\(\)"):
            view.as_strided((2,), (1,), 0)
