"""DropoutTape: F.dropout's results from a 1-bit mask, replayed from its bits by a checkpoint's recompute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bittensor_core.errors import PackedBoolValueError
from layers import MaskStorage, PackedDropout
from layers.checkpointing import checkpoint
from layers.replayed_dropout import DropoutTape, active_tape


def _core(tape: DropoutTape, drop, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Softmax, dropout, matmul, then a second dropout on a transposed view (its own memory order)."""
    with tape.scope():
        probs = drop(torch.softmax(x @ w, -1), 0.2)
        return drop(probs.transpose(0, 1), 0.3).transpose(0, 1) @ w


def _run(recompute: bool, p_fn=None) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, generator=gen, requires_grad=True)
    w = torch.randn(8, 8, generator=gen, requires_grad=True)
    torch.manual_seed(3)
    if recompute:
        tape = DropoutTape(MaskStorage())
        out = checkpoint(_core, tape, tape.dropout, x, w, preserve_rng_state=False)
    else:
        out = _core(DropoutTape(MaskStorage()), lambda t, p: F.dropout(t, p), x, w)
    state = torch.get_rng_state()
    grads = torch.autograd.grad(out.square().sum(), (x, w))
    return out, *grads, state, torch.get_rng_state()


def test_recomputed_with_replayed_masks_equals_f_dropout() -> None:
    """Same output, gradients and generator state as F.dropout run plainly; backward draws nothing."""
    stock, replayed = _run(recompute=False), _run(recompute=True)
    assert all(torch.equal(a, b) for a, b in zip(stock, replayed, strict=True))
    assert torch.equal(replayed[3], replayed[4])  # the recompute took its masks from bits, not the RNG


def test_masks_are_kept_at_one_bit_and_packed_dropout_defers_to_the_tape() -> None:
    tape = DropoutTape(MaskStorage())
    x = torch.randn(4, 16)
    with tape.scope():
        assert active_tape() is tape
        torch.manual_seed(0)
        got = PackedDropout(0.5)(x)
    assert active_tape() is None
    torch.manual_seed(0)
    assert torch.equal(got, F.dropout(x, 0.5))
    (mask,) = tape.masks
    assert mask.dtype == torch.uint8 and mask.numel() == x.numel() // 8


def test_inplace_and_eval_behave_as_f_dropout() -> None:
    tape = DropoutTape(MaskStorage())
    x = torch.randn(3, 8)
    with tape.scope():
        assert tape.dropout(x, 0.5, training=False) is x
        y = x.clone()
        torch.manual_seed(1)
        assert tape.dropout(y, 0.5, inplace=True) is y
    torch.manual_seed(1)
    assert torch.equal(y, F.dropout(x, 0.5)) and len(tape.masks) == 1


def test_a_recompute_applying_other_dropouts_raises() -> None:
    tape = DropoutTape(MaskStorage())
    with tape.scope():
        tape.dropout(torch.randn(4, 8), 0.1)
    with tape.scope(), pytest.raises(PackedBoolValueError, match=r"shape \(4, 9\)"):
        tape.dropout(torch.randn(4, 9), 0.1)
    with tape.scope(), pytest.raises(PackedBoolValueError, match="same dropouts"):
        tape.dropout(torch.randn(4, 8), 0.1)
        tape.dropout(torch.randn(4, 8), 0.1)
