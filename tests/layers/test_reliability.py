"""Regression tests of the layer items of the reliability issue: thread-safe seeded masks, NaN
and bool arguments, numpy scalars, empty batches."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from layers import DropPath, HeadGate, PackedDropout, PackedMoE, TopKRouter, drop_path, packed_dropout


def test_seeded_backward_mask_is_the_forward_mask_while_another_thread_draws() -> None:
    # Backward used to rewind the GLOBAL generator: a thread drawing meanwhile shifted the redraw.
    drop = PackedDropout(0.5, storage="seeded")
    stop = threading.Event()

    def draw_forever() -> None:
        while not stop.is_set():
            torch.rand(64)

    other = threading.Thread(target=draw_forever)
    other.start()
    try:
        wrong = 0
        for _ in range(300):
            x = torch.ones(32, 64, requires_grad=True)
            y = drop(x)
            y.backward(torch.ones_like(y))
            wrong += not torch.equal(x.grad, y.detach())  # grad = mask * 2 = y for x = 1
    finally:
        stop.set()
        other.join(timeout=10)
    assert wrong == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: HeadGate(4, p=float("nan")),
        lambda: PackedDropout(float("nan")),
        lambda: DropPath(float("nan")),
        lambda: packed_dropout(torch.randn(3), float("nan")),
        lambda: drop_path(torch.randn(3), float("nan"), training=True),
    ],
)
def test_nan_probability_raises_dropouts_error(make) -> None:
    with pytest.raises(ValueError, match="probability has to be between 0 and 1, but got nan"):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: HeadGate(True),
        lambda: TopKRouter(8, 4, True),
        lambda: TopKRouter(8, True, 1),
        lambda: PackedMoE(8, 8, 4, True),
    ],
)
def test_bool_counts_are_rejected(make) -> None:
    with pytest.raises(PackedBoolValueError, match=r"=True must be a positive int, got bool"):
        make()


def test_bool_probability_is_rejected() -> None:
    with pytest.raises(PackedBoolTypeError, match="got True"):
        PackedDropout(True)


def test_numpy_scalars_are_accepted_like_nn_dropout() -> None:
    x = torch.randn(4, 16)
    torch.manual_seed(0)
    ours = PackedDropout(np.float32(0.25))(x)
    torch.manual_seed(0)
    ref = torch.nn.Dropout(np.float32(0.25))(x)
    assert torch.equal(ours, ref)
    assert HeadGate(np.int64(4)).num_heads == 4 and TopKRouter(8, np.int32(4), np.int64(2)).top_k == 2


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (DropPath(0.2), (0, 5)),
        (PackedDropout(0.2), (0, 3, 5)),
        (HeadGate(4, p=0.3), (0, 4, 3, 2)),
        (PackedMoE(5, 8, 4, 2), (0, 5)),
        (PackedMoE(5, 8, 4, 2), (2, 0, 5)),
    ],
)
def test_empty_batches_give_empty_outputs(layer: torch.nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, requires_grad=True)
    y = layer.train()(x)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape


def test_router_with_no_tokens() -> None:
    out = TopKRouter(5, 4, 2)(torch.randn(0, 5))
    assert out.mask.shape == (0, 4) and out.weights.shape == (0, 4)
