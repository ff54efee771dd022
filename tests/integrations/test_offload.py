"""Activation offloading (`torch.autograd.graph.save_on_cpu`, transformers' ``offload=True``) keeps
packed masks at their packed size, and training stays bit-identical to offloading alone.

With ``pin_memory=True`` torch copies every saved tensor into ``torch.empty(t.size(), dtype=t.dtype)``
and back. On a machine without CUDA nothing is pinned (``torch.cuda.is_available()`` is False) but
that copy is the very code path torch runs, so these tests exercise it on CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.graph import save_on_cpu

from integrations.huggingface import patch_model

from .tiny_models import ARCHS, assert_identical, loss_and_grads

pytest.importorskip("transformers")


class RecordingOffload(save_on_cpu):
    """`save_on_cpu` that also records (dtype, bytes) of every copy it makes. ``device_type="cuda"``:
    on a CPU-only machine that is the unpinned copy torch makes (with ``device_type="cpu"``,
    ``torch.cpu.is_available()`` is True and pinning raises for stock models as well)."""

    def __init__(self, pin_memory: bool) -> None:
        super().__init__(pin_memory=pin_memory, device_type="cuda")
        self.copies: list[tuple[torch.dtype, int]] = []
        pack = self.pack_hook

        def recording_pack(t: torch.Tensor):
            device, copy = pack(t)
            self.copies.append((copy.dtype, copy.numel() * copy.element_size()))
            return device, copy

        self.pack_hook = recording_pack

    def bytes_of(self, dtype: torch.dtype) -> int:
        return sum(n for d, n in self.copies if d == dtype)


def _equal(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and all(torch.equal(g, b[1][n]) for n, g in a[1].items())


def _offloaded_step(model: nn.Module, inputs: dict[str, torch.Tensor], pin_memory: bool):
    offload = RecordingOffload(pin_memory)
    with offload:
        result = loss_and_grads(model, inputs)
    return result, offload


@pytest.mark.parametrize("pin_memory", [True, False], ids=["pinned-path", "cpu-path"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", ["bert", "gpt2", "mixtral"])
def test_offloaded_training_is_bit_identical_and_masks_stay_packed(
    name: str, attn: str, pin_memory: bool
) -> None:
    inputs = ARCHS[name].inputs(batch=4, seq=32)
    stock, patched = ARCHS[name].model(attn_implementation=attn), ARCHS[name].model(attn_implementation=attn)
    patch_model(patched)
    stock_result, stock_offload = _offloaded_step(stock, inputs, pin_memory)
    patched_result, patched_offload = _offloaded_step(patched, inputs, pin_memory)
    # Offloading changes nothing in the patched model: the checkpointed cores recompute on the layouts
    # of the first forward (layers/checkpointing.py, NOTE (layouts)), so it trains as stock without it.
    assert_identical(loss_and_grads(patched, inputs), patched_result)
    assert_identical(loss_and_grads(stock, inputs), patched_result)
    # Stock's own offload hands its backward formulas contiguous copies of strided saved tensors (the
    # pinned path), which may round differently (GPT-2 and Mixtral here): where it does not, the two
    # offloaded runs are equal bit for bit; where it does, they agree to rounding.
    if _equal(loss_and_grads(stock, inputs), stock_result):
        assert_identical(stock_result, patched_result)
    else:
        assert pin_memory, "the unpinned path keeps layouts"
        for name, grad in stock_result[1].items():
            torch.testing.assert_close(patched_result[1][name], grad, rtol=1e-4, atol=1e-6)

    # Every dropout mask is offloaded as its packed bytes: no bool copy at all, and the uint8 bytes are
    # an eighth of the elements stock keeps as 4-byte float noise (CPU dropout).
    assert patched_offload.bytes_of(torch.bool) == 0
    masks = patched_offload.bytes_of(torch.uint8)
    assert masks > 0
    assert patched_offload.bytes_of(torch.float32) + masks < stock_offload.bytes_of(torch.float32)


def test_offload_through_transformers_offload_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """``activation_checkpointing_enable(offload=True)`` wraps every layer's checkpoint in
    ``save_on_cpu(pin_memory=True)``: patched training equals stock training with the same flag."""
    import inspect

    import transformers
    import transformers.modeling_utils as modeling_utils

    enable = getattr(modeling_utils.PreTrainedModel, "activation_checkpointing_enable", None)
    if enable is None or "offload" not in inspect.signature(enable).parameters:
        pytest.skip(
            f"transformers {transformers.__version__} has no activation_checkpointing_enable(offload=...)"
        )
    made: list[RecordingOffload] = []

    def offload(pin_memory: bool, device_type: str) -> RecordingOffload:
        made.append(RecordingOffload(pin_memory))
        return made[-1]

    monkeypatch.setattr(modeling_utils, "save_on_cpu", offload)
    inputs = ARCHS["bert"].inputs(batch=4, seq=32)
    results = []
    for patched in (False, True):
        model = ARCHS["bert"].model(attn_implementation="sdpa")
        if patched:
            patch_model(model)
        model.activation_checkpointing_enable(
            offload=True, activation_checkpointing_kwargs={"use_reentrant": False}
        )
        results.append(loss_and_grads(model, inputs))
        assert made and made[-1].copies, "transformers did not offload through save_on_cpu"
    assert_identical(*results)
