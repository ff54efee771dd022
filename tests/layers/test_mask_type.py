"""The generic MaskFunction: gradcheck per mask type, hooks, checkpoint, autocast, compile, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bittensor_core import PackedBool, PackedBoolTypeError, PackedBoolValueError, SavedTensorCensus
from layers import (
    BernoulliMask,
    DropPath,
    HeadGate,
    MaskStorage,
    PackedDropout,
    apply_mask,
    packed_attention,
    packed_dropout,
)
from layers.moe import CombineMask, DispatchMask, Membership
from layers.probs_dropout_matmul import ProbsDropoutMatmul

from .helpers import bits_equal, leaf


def seeded(fn, seed: int = 0):
    """fn with torch's generator reset before every call (gradcheck calls it many times)."""

    def call(*args: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(seed)
        return fn(*args)

    return call


ROUTE = torch.tensor(
    [[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 1, 1]], dtype=torch.bool
)  # 4 tokens, 2 of 3 experts
ROUTING = Membership(num_experts=3, top_k=2)

GRADCHECK_CASES = {
    "dropout": (seeded(lambda x: packed_dropout(x, 0.4)), [(5, 7)]),
    "dropout-seeded-fast": (
        seeded(lambda x: packed_dropout(x, 0.4, storage="seeded", sampler="fast")),
        [(5, 7)],
    ),
    "bernoulli-broadcast": (
        seeded(lambda x: apply_mask(BernoulliMask(0.5, lambda t: (t.shape[0], 1)), x)),
        [(6, 4)],
    ),
    "attention-probs-dropout": (
        seeded(lambda p, v: apply_mask(ProbsDropoutMatmul(0.3), p, v)),
        [(2, 3, 4), (2, 4, 5)],
    ),
    "moe-dispatch": (lambda x: apply_mask(DispatchMask(ROUTING), x, mask=ROUTE), [(4, 3)]),
    "moe-combine": (
        lambda out, w: apply_mask(CombineMask(ROUTING), out, w, mask=PackedBool(ROUTE)),
        [(8, 2), (4, 3)],
    ),
    "attention": (
        seeded(lambda q, k, v: packed_attention(q, k, v, dropout_p=0.3, is_causal=True)),
        [(1, 2, 3, 4)] * 3,
    ),
}


@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_gradcheck(case: str) -> None:
    fn, shapes = GRADCHECK_CASES[case]
    inputs = tuple(leaf(*s, dtype=torch.float64, seed=i) for i, s in enumerate(shapes))
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("case", ["dropout", "attention-probs-dropout", "moe-combine"])
def test_double_backward(case: str) -> None:
    fn, shapes = GRADCHECK_CASES[case]
    inputs = tuple(leaf(*s, dtype=torch.float64, seed=i) for i, s in enumerate(shapes))
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("pin_memory", [False, True])
def test_mask_goes_through_save_for_backward(pin_memory: bool) -> None:
    """Saved-tensor hooks see the packed bytes (so offloading and checkpointing manage them), and
    `save_on_cpu`'s pinned path (a copy into ``torch.empty(t.size(), dtype=t.dtype)``) keeps them packed."""
    seen: list[tuple[type, torch.dtype, int]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen.append((type(t), t.dtype, t.numel()))
        return t

    x = leaf(8, 16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = packed_dropout(x, 0.5)
    assert seen == [(torch.Tensor, torch.uint8, 8 * 16 // 8)]
    with torch.autograd.graph.save_on_cpu(pin_memory=pin_memory):
        out2 = packed_dropout(x, 0.5)
    (out.sum() + out2.sum()).backward()
    assert torch.equal(x.grad, (out + out2).detach() / x.detach())


class Block(nn.Module):
    """A tiny transformer-ish block using every packed layer."""

    def __init__(self, drop: type = PackedDropout) -> None:
        super().__init__()
        self.qkv, self.proj, self.heads = nn.Linear(16, 48), nn.Linear(16, 16), 4
        self.drop, self.gate, self.path = drop(0.2), HeadGate(4, 0.25), DropPath(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, 4).permute(2, 0, 3, 1, 4)
        att = self.gate(packed_attention(q, k, v, dropout_p=0.1, is_causal=True, training=self.training))
        return x + self.path(self.drop(self.proj(att.transpose(1, 2).reshape(b, s, 16))))


def loss_and_grads(model: nn.Module, x: torch.Tensor, wrap=None) -> tuple[torch.Tensor, list]:
    model.zero_grad()
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(11)
    out = wrap(model, x) if wrap else model(x)
    loss = out.square().mean()
    loss.backward()
    return loss.detach(), [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpoint_recomputes_the_same_masks(use_reentrant: bool) -> None:
    torch.manual_seed(0)
    model, x = Block(), torch.randn(3, 6, 16)
    loss, grads = loss_and_grads(model, x)
    ck_loss, ck_grads = loss_and_grads(model, x, lambda m, t: checkpoint(m, t, use_reentrant=use_reentrant))
    assert torch.equal(loss, ck_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, ck_grads, strict=True))


def test_autocast_bf16_matches_nn_dropout_model() -> None:
    torch.manual_seed(0)
    packed = nn.Sequential(nn.Linear(16, 32), PackedDropout(0.3), nn.Linear(32, 4))
    native = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.3), nn.Linear(32, 4))
    native.load_state_dict(packed.state_dict())
    x = torch.randn(8, 16)
    results = []
    for model in (packed, native):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, grads = loss_and_grads(model, x)
        results.append((loss, grads))
    assert bits_equal(results[0][0], results[1][0])
    assert all(bits_equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_autocast_bf16_block_runs() -> None:
    torch.manual_seed(0)
    model = Block()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grads = loss_and_grads(model, torch.randn(2, 5, 16))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
def test_torch_compile_loss_equals_eager() -> None:
    import torch._inductor.config as inductor_config

    # Inductor otherwise replaces torch's CPU Bernoulli by its own generator (for nn.Dropout too).
    # config.patch, not monkeypatch: monkeypatch's undo deletes the config module's attributes.
    with inductor_config.patch(fallback_random=True, fx_graph_cache=False):
        torch.manual_seed(0)
        model, x = Block(), torch.randn(2, 5, 16)
        loss, grads = loss_and_grads(model, x)
        compiled = torch.compile(model)
        c_loss, c_grads = loss_and_grads(compiled, x)
        torch.testing.assert_close(c_loss, loss, rtol=1e-6, atol=1e-7)
        for a, b in zip(c_grads, grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        fast = torch.compile(lambda t: packed_dropout(t, 0.3, sampler="fast"))
        torch.manual_seed(1)
        eager_fast = packed_dropout(x, 0.3, sampler="fast")
        torch.manual_seed(1)
        assert torch.equal(fast(x), eager_fast)


def test_given_mask_errors() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(PackedBoolTypeError, match="torch.int64"):
        apply_mask(DispatchMask(ROUTING), x, mask=ROUTE.long())
    with pytest.raises(PackedBoolValueError, match="seeded"):
        apply_mask(DispatchMask(ROUTING), x, mask=ROUTE, storage=MaskStorage(storage="seeded"))
    with pytest.raises(PackedBoolTypeError, match="no sample"):
        apply_mask(DispatchMask(ROUTING), x)


def test_saved_mask_is_its_plain_packed_bytes_counted_as_packed() -> None:
    """Plain uint8 (a saved-tensor hook copying it keeps 1 bit per element), which the census counts
    as a packed mask."""
    x = leaf(4, 16)
    with SavedTensorCensus() as census:
        out = apply_mask(BernoulliMask(0.5), x, storage=MaskStorage(unpack="cached"))
    saved = out.grad_fn.saved_tensors[0]
    assert type(saved) is torch.Tensor and saved.dtype == torch.uint8 and saved.shape == (4 * 16 // 8,)
    assert census.packed_bytes == census.bytes_by_dtype[torch.bool] == 8
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad != 0, out != 0)


class _SeenMask(BernoulliMask):
    """BernoulliMask that records the mask it drew and the bool tensor `apply` gets from it."""

    def sample(self, x: torch.Tensor, draw) -> torch.Tensor:
        self.drawn = super().sample(x, draw)
        return self.drawn

    def apply(self, mask, x: torch.Tensor) -> torch.Tensor:
        self.seen, self.packed = mask.unpack(), mask.rows()
        return super().apply(mask, x)


def test_a_drawn_mask_is_applied_as_drawn_not_unpacked_from_its_bytes() -> None:
    gate = _SeenMask(0.5, shape_of=lambda x: (x.shape[0], 1))
    out = apply_mask(gate, leaf(8, 16))
    assert gate.seen is gate.drawn  # the very tensor: no pack-then-unpack in forward
    assert torch.equal(PackedBool.from_packed(gate.packed, gate.drawn.shape).unpack(), gate.drawn)
    out.backward(torch.ones_like(out))  # backward reads the saved bytes


def test_mask_storage_says_whether_it_is_seeded() -> None:
    assert MaskStorage(storage="seeded").seeded and not MaskStorage().seeded
