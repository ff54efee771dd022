"""pack_saved_bools packs the bool tensors autograd saves; gradients stay identical."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from bittensor_core import PackedBool, SavedTensorCensus, pack_saved_bools
from bittensor_core.saved_bools import SavedBool

from .strategies import WIDTHS


def _model(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    h = (x @ w).masked_fill(x[:, :1] > 0.5, 0.0)
    h = torch.where(h > 0, h, 0.1 * h)
    out, _ = torch.native_dropout(h, 0.3, True)
    return out.pow(2).sum()


def _grads(hooks: object | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(16, 24, requires_grad=True)
    w = torch.randn(24, 40, requires_grad=True)
    if hooks is None:
        _model(x, w).backward()
    else:
        with hooks:
            loss = _model(x, w)
        loss.backward()
    return x.grad, w.grad


@pytest.mark.parametrize("bits", WIDTHS)
def test_gradients_identical(bits: int) -> None:
    reference = _grads(None)
    packed = _grads(pack_saved_bools(bits))
    assert all(torch.equal(a, b) for a, b in zip(reference, packed, strict=True))


def test_masks_of_masked_fill_where_and_dropout_are_packed() -> None:
    saved: list[object] = []
    hooks = pack_saved_bools()
    original = hooks.pack_hook
    hooks.pack_hook = lambda t: saved.append(original(t)) or saved[-1]
    torch.manual_seed(0)
    x = torch.randn(16, 24, requires_grad=True)
    with hooks:
        a = x.masked_fill(x > 1, 0.0)
        b = torch.where(x > 0, x, 0.0)
        c, _ = torch.native_dropout(x, 0.3, True)
    packed = [s for s in saved if isinstance(s, SavedBool)]
    assert len(packed) == 3  # one bool mask for each of the three ops
    assert all(isinstance(s.packed, PackedBool) and s.packed.shape == x.shape for s in packed)
    assert not any(isinstance(s, torch.Tensor) and s.dtype == torch.bool for s in saved)
    (a + b + c).sum().backward()


def test_census_sees_one_bit_per_mask_element() -> None:
    x = torch.randn(64, 100, requires_grad=True)
    with SavedTensorCensus() as plain:
        x.masked_fill(x > 0, 0.0)
    with SavedTensorCensus(pack_bools=1) as packed:
        x.masked_fill(x > 0, 0.0)
    assert plain.bytes_by_dtype[torch.bool] == 64 * 100
    assert packed.bytes_by_dtype[torch.bool] == packed.packed_bytes == 64 * 13  # ceil(100 / 8)


def test_non_contiguous_saved_bool_is_restored_with_its_strides() -> None:
    x = torch.randn(8, 6, requires_grad=True)
    mask = (torch.rand(6, 8) > 0.5).t()
    with pack_saved_bools():
        y = x.masked_fill(mask, 0.0).sum()
    y.backward()
    assert torch.equal(x.grad, (~mask).float())


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_nesting_with_checkpoint_innermost_wins(use_reentrant: bool) -> None:
    """Outside a checkpointed region our hooks pack; inside, checkpoint's own hooks win."""
    reference = _grads(None)
    torch.manual_seed(0)
    x = torch.randn(16, 24, requires_grad=True)
    w = torch.randn(24, 40, requires_grad=True)
    with SavedTensorCensus(pack_bools=1) as census:
        loss = checkpoint(_model, x, w, use_reentrant=use_reentrant)
    loss.backward()
    assert torch.equal(x.grad, reference[0]) and torch.equal(w.grad, reference[1])
    assert census.packed_bytes == 0  # checkpoint saved no bool masks for us to pack

    def packed_inside(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with pack_saved_bools():
            return _model(x, w)

    torch.manual_seed(0)
    x2 = torch.randn(16, 24, requires_grad=True)
    w2 = torch.randn(24, 40, requires_grad=True)
    checkpoint(packed_inside, x2, w2, use_reentrant=use_reentrant).backward()
    assert torch.equal(x2.grad, reference[0]) and torch.equal(w2.grad, reference[1])
