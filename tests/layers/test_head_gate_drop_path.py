"""HeadGate and DropPath: per-head and per-sample masks, saved as packed bits."""

from __future__ import annotations

import math

import pytest
import torch

from bittensor_core import PackedBoolTypeError, PackedBoolValueError
from layers import DropPath, HeadGate, MaskStorage, PackedDropout, drop_path

from .helpers import bits_equal, leaf, saved_bytes


def timm_drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """timm.layers.drop_path (scale_by_keep=True), the reference."""
    if p == 0.0 or not training:
        return x
    keep = 1 - p
    noise = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if keep > 0.0:
        noise.div_(keep)
    return x * noise


@pytest.mark.parametrize("storage", ["packed", "seeded"])
@pytest.mark.parametrize("p", [0.1, 0.45, 1.0])
def test_drop_path_bit_identical_to_timm(p: float, storage: str) -> None:
    x, grad = leaf(37, 5, 6), leaf(37, 5, 6, seed=1)
    results = []
    functional = lambda t: drop_path(t, p, True, storage=storage)  # noqa: E731
    for fn in (lambda t: timm_drop_path(t, p, True), DropPath(p, storage=storage), functional):
        xi = x.detach().clone().requires_grad_()
        torch.manual_seed(4)
        out = fn(xi)
        out.backward(grad)
        results.append((out, xi.grad, torch.get_rng_state()))
    (ref, ref_g, ref_rng), *packed = results
    for out, g, rng in packed:
        assert bits_equal(out, ref) and bits_equal(g, ref_g) and torch.equal(rng, ref_rng)


def test_drop_path_saves_one_bit_per_sample_and_eval_is_identity() -> None:
    x = leaf(100, 16, 8)
    _, census = saved_bytes(DropPath(0.2), x)
    assert census.total_bytes == math.ceil(100 / 8)
    assert DropPath(0.2).eval()(x) is x and drop_path(x, 0.2, training=False) is x
    assert "p=0.2, bits=1" in repr(DropPath(0.2))
    with pytest.raises(ValueError, match="between 0 and 1"):
        DropPath(1.2)


def test_head_gate_drops_whole_heads_and_rescales() -> None:
    x = torch.ones(64, 8, 3, 2, requires_grad=True)
    torch.manual_seed(0)
    out = HeadGate(8, p=0.25)(x)
    per_head = out[:, :, :, :].flatten(2)
    assert torch.all((per_head == 0).all(-1) | (per_head == 1 / 0.75).all(-1))  # gate is per (b, h)
    kept = (per_head[..., 0] != 0).double().mean().item()
    assert abs(kept - 0.75) < 0.07
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, out.detach())


def test_head_gate_matches_plain_reference_and_saves_bits() -> None:
    x, grad = leaf(6, 12, 5, 4), leaf(6, 12, 5, 4, seed=1)
    torch.manual_seed(2)
    out, census = saved_bytes(HeadGate(12, p=0.3), x)
    out.backward(grad)
    torch.manual_seed(2)
    keep = torch.empty(6, 12, 1, 1).bernoulli_(0.7)
    assert bits_equal(out, x * (keep / 0.7))
    assert bits_equal(x.grad, grad * (keep / 0.7))
    assert census.total_bytes == math.ceil(6 * 12 / 8)


@pytest.mark.parametrize("shape", [(12,), (6, 12)])
def test_fixed_head_mask(shape: tuple[int, ...]) -> None:
    x = leaf(6, 12, 5, 4)
    head_mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.4
    for mask in (head_mask, head_mask.float()):
        gate = HeadGate(12, head_mask=mask).eval()  # a pruning mask applies in eval too
        want = head_mask.expand(6, 12)[..., None, None]
        assert torch.equal(gate(x), x * want)
    both = HeadGate(12, p=0.5, head_mask=head_mask)
    out = both(x)
    assert torch.all(out[~want.expand_as(out)] == 0)


def test_head_gate_errors() -> None:
    with pytest.raises(PackedBoolValueError, match="num_heads=4.*got shape \\(2, 3, 5, 8\\)"):
        HeadGate(4, 0.1)(torch.ones(2, 3, 5, 8))
    with pytest.raises(PackedBoolValueError, match="shape"):
        HeadGate(4, head_mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(PackedBoolValueError, match="only 0 and 1"):
        HeadGate(4, head_mask=torch.full((4,), 0.5))
    with pytest.raises(PackedBoolTypeError, match="int64"):
        HeadGate(4, head_mask=torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="between 0 and 1"):
        HeadGate(4, p=-0.1)
    with pytest.raises(PackedBoolValueError, match="num_heads"):
        HeadGate(0)


def test_from_options_takes_the_mask_options_whole() -> None:
    options = MaskStorage(bits=2, storage="seeded")
    modules = [
        PackedDropout.from_options(options, 0.1, True),
        DropPath.from_options(options, 0.2),
        HeadGate.from_options(options, 4, p=0.3),
    ]
    assert all(m.options is options for m in modules)
    assert (modules[0].p, modules[0].inplace, modules[1].p, modules[2].num_heads) == (0.1, True, 0.2, 4)
