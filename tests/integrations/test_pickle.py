"""Whole patched models pickle: ``torch.save(model)`` / ``torch.load(weights_only=False)`` and
multiprocessing spawn, and the loaded model trains exactly like the one that was saved."""

from __future__ import annotations

import io
import multiprocessing

import pytest
import torch
from torch import nn

from integrations.huggingface import patch_model, report, unpatch_model

from .tiny_models import ARCHS, assert_identical, loss_and_grads, stock_experts

pytest.importorskip("transformers")


def _patched(name: str, attn: str) -> nn.Module:
    model = stock_experts(ARCHS[name].model(attn_implementation=attn))
    patch_model(model)
    return model


def _round_trip(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_torch_save_load_of_a_patched_model_trains_identically(name: str, attn: str) -> None:
    model = _patched(name, attn)
    loaded = _round_trip(model)
    assert str(report(loaded)) == str(report(model))
    inputs = ARCHS[name].inputs()
    assert_identical(loss_and_grads(model, inputs), loss_and_grads(loaded, inputs))
    # and the loaded model still unpatches to stock
    unpatch_model(loaded)
    stock = stock_experts(ARCHS[name].model(attn_implementation=attn))
    assert [type(m) for m in loaded.modules()] == [type(m) for m in stock.modules()]


def _train_in_fresh_process(payload: bytes, name: str) -> tuple[bool, bytes]:
    """In a spawned process: whether the packed attention was registered before loading (it must not
    be: registries are per process), and the pickled (loss, grads) of one step of the loaded model."""
    from transformers import AttentionInterface

    registered_before = any(key.startswith("packedbool") for key in AttentionInterface._global_mapping)
    model = torch.load(io.BytesIO(payload), weights_only=False)
    buffer = io.BytesIO()
    torch.save(loss_and_grads(model, ARCHS[name].inputs()), buffer)
    return registered_before, buffer.getvalue()


@pytest.mark.slow
def test_a_patched_model_trains_identically_in_a_spawned_process() -> None:
    model = _patched("bert", "sdpa")
    buffer = io.BytesIO()
    torch.save(model, buffer)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        registered_before, result = pool.apply(_train_in_fresh_process, (buffer.getvalue(), "bert"))
    assert not registered_before
    expected = loss_and_grads(model, ARCHS["bert"].inputs())
    assert_identical(expected, torch.load(io.BytesIO(result), weights_only=False))
