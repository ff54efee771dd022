"""The eager attention core's lean recompute (NOTE (lean recompute) in layers/checkpointing.py): no torch
checkpoint, the checkpoint's gradients bit for bit (first and second order), its inputs saved as the checkpoint saves them
(saved-tensor hooks see the same bytes), and torch's own errors where a recompute would be wrong."""

from __future__ import annotations

import pytest
import torch

import layers.checkpointing as checkpointing
from bittensor_core import SavedTensorCensus
from layers.attention_core import sdpa_math


def _inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen, requires_grad=True) for _ in range(3))
    noise = (torch.rand(2, 3, 5, 5, generator=gen) < 0.8).float() / 0.8
    return q, k, v, noise


def _core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return sdpa_math(q, k, v, None, lambda attn: attn * noise)


def _grads(run, create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    q, k, v, noise = _inputs()
    out = run(q, k, v, noise)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out), create_graph=create_graph)
    if not create_graph:
        return (out, *grads)
    return (out, *grads, *torch.autograd.grad(sum(g.square().sum() for g in grads), (q, k, v)))


def _lean(q, k, v, noise):
    return checkpointing.checkpoint_core(_core, q, k, v, noise, preserve_rng_state=False)


def _torch_checkpoint(q, k, v, noise):
    return checkpointing.checkpoint(_core, q, k, v, noise, preserve_rng_state=False)


@pytest.mark.parametrize("create_graph", [False, True], ids=["grad", "grad-of-grad"])
def test_lean_recompute_equals_the_checkpoint_and_the_plain_core(create_graph: bool) -> None:
    lean = _grads(_lean, create_graph)
    for reference in (_torch_checkpoint, _core):
        for a, b in zip(lean, _grads(reference, create_graph), strict=True):
            assert torch.equal(a, b)


def test_no_torch_checkpoint_and_the_checkpoints_saved_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, noise = _inputs()
    with SavedTensorCensus() as by_checkpoint:
        _torch_checkpoint(q, k, v, noise)

    def refuse(*args, **kwargs):
        raise AssertionError("torch's checkpoint was called")

    monkeypatch.setattr(checkpointing, "_torch_checkpoint", refuse)
    with SavedTensorCensus() as census:
        out = _lean(q, k, v, noise)
    assert census.total_bytes == by_checkpoint.total_bytes > 0  # q, k, v and the noise, nothing computed
    out.sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None


def test_an_input_modified_in_place_is_an_error() -> None:
    q, k, v, noise = _inputs()
    out = _lean(q, k, v, noise)
    with torch.no_grad():
        v.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_a_second_backward_is_an_error() -> None:
    q, k, v, noise = _inputs()
    out = _lean(q, k, v, noise).sum()
    out.backward()
    with pytest.raises(RuntimeError, match="a second time"):
        out.backward()
