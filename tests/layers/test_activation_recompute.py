"""`RecomputedActivation` + `recompute_scope`: the activation output is not kept, gradients are
bit-identical (the same op recomputes it), and every case that must not take a recipe does not."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bittensor_core import SavedTensorCensus
from layers.activation_recompute import RecomputedActivation, recompute_scope

B, S, H, FF = 4, 8, 16, 64
OUTPUT_BYTES = B * S * FF * 4  # one float32 activation output


class MLP(nn.Module):
    """``down(act(up(x)))`` with an optional in-place op on the activation output."""

    def __init__(self, act: nn.Module, touch_output: bool = False) -> None:
        super().__init__()
        self.up, self.act, self.down = nn.Linear(H, FF), act, nn.Linear(FF, H)
        self.touch_output = touch_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.up(x))
        if self.touch_output:
            h.mul_(2.0)
        return self.down(h)


def _pair(act: nn.Module, **kwargs: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    stock = MLP(act, **kwargs)
    wrapped = copy.deepcopy(stock)
    wrapped.act = RecomputedActivation(wrapped.act)
    return stock, wrapped


def _step(model: nn.Module, scoped: bool, x: torch.Tensor, run=None) -> tuple[torch.Tensor, list, int]:
    """Loss, every gradient, and the bytes a census outside the scope saw saved."""
    model.zero_grad(set_to_none=True)
    run = run or model
    with SavedTensorCensus() as census:
        if scoped:
            with recompute_scope():
                loss = run(x).square().sum()
        else:
            loss = run(x).square().sum()
    loss.backward()
    return loss, [p.grad for p in model.parameters()], census.total_bytes


CASES = {
    "gelu": (nn.GELU(), False, OUTPUT_BYTES),
    "gelu-tanh": (nn.GELU(approximate="tanh"), False, OUTPUT_BYTES),
    "silu": (nn.SiLU(), False, OUTPUT_BYTES),
    # ReLU's backward keeps its output: a recipe would keep the input instead and save nothing.
    "relu-left-alone": (nn.ReLU(), False, 0),
    # ``act(h).mul_(2)`` is not ``act(h)``: the modified tensor is saved as is.
    "modified-in-place-kept": (nn.GELU(), True, 0),
}


@pytest.mark.parametrize("case", CASES)
def test_gradients_are_bit_identical_and_only_a_pure_output_is_dropped(case: str) -> None:
    act, touch_output, less = CASES[case]
    stock, wrapped = _pair(act, touch_output=touch_output)
    x = torch.randn(B, S, H)
    loss, grads, saved = _step(stock, False, x)
    loss2, grads2, saved2 = _step(wrapped, True, x)
    assert torch.equal(loss, loss2)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))
    assert saved - saved2 == less


def test_outside_a_scope_nothing_changes() -> None:
    stock, wrapped = _pair(nn.GELU())
    x = torch.randn(B, S, H)
    assert _step(stock, False, x)[2] == _step(wrapped, False, x)[2]


def test_input_modified_in_place_after_forward_raises_as_autograd_does() -> None:
    _, wrapped = _pair(nn.GELU())
    kept: list[torch.Tensor] = []
    wrapped.act.register_forward_pre_hook(lambda module, args: kept.append(args[0]))
    with recompute_scope():
        loss = wrapped(torch.randn(B, S, H)).sum()
    with torch.no_grad():
        kept[0].add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_under_activation_checkpointing_nothing_is_recorded() -> None:
    stock, wrapped = _pair(nn.GELU())
    x = torch.randn(B, S, H, requires_grad=True)
    loss, grads, _ = _step(stock, False, x, run=lambda t: checkpoint(stock, t, use_reentrant=False))
    loss2, grads2, _ = _step(wrapped, True, x, run=lambda t: checkpoint(wrapped, t, use_reentrant=False))
    assert torch.equal(loss, loss2)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))


def test_bf16_autocast_is_replayed() -> None:
    stock, wrapped = _pair(nn.GELU())
    x = torch.randn(B, S, H)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grads, saved = _step(stock, False, x)
        loss2, grads2, saved2 = _step(wrapped, True, x)
    assert torch.equal(loss, loss2) and saved2 < saved
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))


def test_enclosing_saved_tensor_hooks_still_see_every_other_tensor() -> None:
    """Inside a census that packs bools (as ``pack_saved_bools``), the bool gate still reaches it."""

    class Gated(MLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(self.act(self.up(x))) * (x > 0)  # mul keeps the bool gate for backward

    torch.manual_seed(0)
    model = Gated(RecomputedActivation(nn.GELU()))
    x = torch.randn(B, S, H)
    with SavedTensorCensus(pack_bools=1) as plain:
        loss = model(x).sum()
    loss.backward()
    with SavedTensorCensus(pack_bools=1) as scoped, recompute_scope():
        loss = model(x).sum()
    loss.backward()
    assert scoped.packed_bytes == plain.packed_bytes > 0
    assert plain.total_bytes - scoped.total_bytes == OUTPUT_BYTES
