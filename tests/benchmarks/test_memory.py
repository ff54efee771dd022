"""benchmarks.kit.memory: peak bytes (CPU MemTracker, CUDA allocator) and saved bytes, on real tensors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from benchmarks.kit.memory import peak_memory, retained_after_forward, saved_bytes
from bittensor_core import PackedBool

ROWS, COLS = 64, 1000  # 64 000 bool bytes, 8 000 packed bytes


def test_peak_counts_numpy_made_packed_storage() -> None:
    mask = torch.rand(ROWS, COLS) < 0.5
    out, peak = peak_memory(lambda: PackedBool(mask), mask)
    assert out.packed_nbytes == ROWS * COLS // 8
    assert peak == mask.numel() + out.packed_nbytes


def test_peak_counts_the_lazily_unpacked_mask() -> None:
    packed = PackedBool(torch.rand(ROWS, COLS) < 0.5)
    plain, peak = peak_memory(packed.unpack, packed.packed)
    assert peak == packed.packed_nbytes + plain.numel()


def test_peak_counts_packed_bytes_built_by_numpy() -> None:
    bits = np.random.default_rng(0).random((ROWS, COLS)) < 0.5

    def build() -> PackedBool:
        return PackedBool.from_packed(
            torch.from_numpy(np.packbits(bits, axis=-1, bitorder="little")), (ROWS, COLS)
        )

    out, peak = peak_memory(build)
    assert torch.equal(out.unpack(), torch.from_numpy(bits))
    assert peak == ROWS * COLS // 8


def test_peak_of_a_training_step_includes_state_and_activations() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randn(128, 256)

    def step() -> None:
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # optimizer state now exists
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    _, peak = peak_memory(step, model, optimizer, x)
    stock = MemTracker()  # keeping only the global peak must not change it
    stock.track_external(model, optimizer, x)
    with stock:
        step()
    assert peak == stock.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    # parameters + 2 Adam states + input, plus at least the two hidden activations of 128 x 512.
    assert peak >= 3 * param_bytes + x.numel() * 4 + 2 * 128 * 512 * 4
    assert peak < 6 * param_bytes + 10 * 128 * 512 * 4


def test_saved_bytes_counts_each_storage_once() -> None:
    a = torch.randn(100, 10, requires_grad=True)
    b = torch.randn(100, 10, requires_grad=True)
    out, census = saved_bytes(lambda: (a * b).sum())
    assert census.total_bytes == a.numel() * 4 + b.numel() * 4
    out.backward()
    assert torch.equal(a.grad, b.detach())


class _PartlyFrozen(torch.nn.Module):
    """Two linear layers, the first one's weight frozen (as sinusoidal tables, or peft's base weights)."""

    def __init__(self, frozen: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(64, 128), torch.nn.Linear(128, 32)
        self.a.weight.requires_grad_(not frozen)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=self.b(self.a(x)).square().mean())


def test_memory_tools_measure_models_with_frozen_parameters() -> None:
    """MemTracker hooks every parameter for its gradient; torch refuses a hook on a frozen one."""
    x = torch.randn(16, 64)
    retained, peak = {}, {}
    for frozen in (False, True):
        model = _PartlyFrozen(frozen)
        retained[frozen] = retained_after_forward(model, {"x": x})
        _, peak[frozen] = peak_memory(lambda m=model: m(x).loss.backward(), model, x)
        assert (model.a.weight.grad is None) == frozen and model.a.bias.grad is not None
    assert retained[True] == retained[False] > 0  # the forward keeps the same tensors either way
    assert peak[True] < peak[False]  # but the frozen weight never gets a gradient


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_on_cuda_uses_the_allocator() -> None:
    before = torch.cuda.memory_allocated()
    _, peak = peak_memory(lambda: torch.empty(2**20, device="cuda").sum(), device="cuda")
    assert peak >= before + 4 * 2**20
