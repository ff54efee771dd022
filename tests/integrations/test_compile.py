"""torch.compile on packed layers and patched models: one graph, exact results, saved bytes, shapes.

Structural checks and exact comparisons run on the "aot_eager" backend (AOTAutograd's graphs run
by eager kernels: the same aten ops as eager, so results are bit-identical to eager); inductor
runs once, on a small MLP, for what only it changes (fusion, its partitioner). See docs/compile.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
import torch._inductor.config
import torch.distributed as dist
import torch.multiprocessing as mp
from packaging.version import Version
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.utils.checkpoint import checkpoint

from bittensor_core import SavedTensorCensus, pack_saved_bools
from layers import DropPath, HeadGate, MaskType, PackedDropout, PackedMoE, TopKRouter, apply_mask
from layers.options import MaskStorage

from .gloo_ranks import BATCH, GLOO_TIMEOUT, SEED, WORLD, exit_worker, half, single_process_grads
from .tiny_models import ARCHS, VOCAB, Arch, assert_identical, loss_and_grads, skip_if_stock_cannot_compile

transformers = pytest.importorskip("transformers")
from integrations.huggingface import patch_model  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class RowGate(MaskType):
    """A user mask type written against the `Mask` interface: zero whole rows, no rescale."""

    def sample(self, x: torch.Tensor, draw) -> torch.Tensor:
        return draw((x.shape[0], x.shape[1], 1), 0.7)

    def apply(self, mask, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return x * mask.unpack()

    def grad(self, mask, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor]:
        return (grad_out * mask.unpack(),)


class Block(nn.Module):
    """Every packed layer once: dropout, DropPath, HeadGate, a user mask type, a top-k router."""

    def __init__(self, **options: object) -> None:
        super().__init__()
        self.options = MaskStorage(**options)
        self.inp, self.out = nn.Linear(16, 16), nn.Linear(16, 4)
        self.drop = PackedDropout(0.2, **options)
        self.path = DropPath(0.3, **options)
        self.gate = HeadGate(4, p=0.25, **options)
        self.router = TopKRouter(16, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, S, 16)
        b, s, _ = x.shape
        h = x + self.path(self.drop(torch.relu(self.inp(x))))
        h = self.gate(h.view(b, s, 4, 4).transpose(1, 2)).transpose(1, 2).reshape(b, s, 16)
        h = apply_mask(RowGate(), h, storage=self.options)
        weights = self.router(h).weights.view(b, s, 4)
        return self.out(h) * weights


def _step(model: nn.Module, x: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Loss, parameter grads and the bytes saved for backward of one step from `seed`."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with SavedTensorCensus() as census:
        loss = model(x).square().mean()
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()], census.total_bytes


def _x(b: int = 3, s: int = 5) -> torch.Tensor:
    return torch.randn(b, s, 16, generator=torch.Generator().manual_seed(b * 100 + s))


OPTIONS = [
    {},
    {"bits": 2, "unpack": "cached"},
    {"sampler": "fast"},
    {"sampler": "fast", "storage": "seeded"},
]


def _one_graph_with_eager_results(module: nn.Module) -> None:
    explained = torch._dynamo.explain(module)(_x())
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    torch._dynamo.reset()
    eager = _step(module, _x())
    compiled = _step(torch.compile(module, fullgraph=True, backend="aot_eager"), _x())
    assert torch.equal(compiled[0], eager[0])
    assert all(torch.equal(a, b) for a, b in zip(compiled[1], eager[1], strict=True))
    assert compiled[2] <= eager[2]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
def test_packed_layers_compile_to_one_graph_with_eager_results(options: dict) -> None:
    torch.manual_seed(0)
    _one_graph_with_eager_results(Block(**options).train())


def test_packed_moe_compiles_to_one_graph_with_eager_results() -> None:
    """Sorted grouped experts: no loop over the experts present, no int64 routing index saved."""
    torch.manual_seed(0)
    _one_graph_with_eager_results(PackedMoE(16, 32, num_experts=4, top_k=2).train())


def test_one_compiled_model_serves_many_shapes_without_recompiling() -> None:
    # Automatic dynamic shapes: the first call compiles static, the first new size recompiles with
    # symbolic sizes; a flat saved mask under 8 bits (B * H <= 8) is specialised once more. After
    # that no new (batch, sequence) size recompiles. (No census here: with saved-tensor hooks active
    # around the call, dynamo compiled every size static in our runs.)
    torch.manual_seed(0)
    block = Block().train()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(block, fullgraph=True, backend=counter)

    def check(b: int, s: int) -> None:
        torch.manual_seed(1)
        want = block(_x(b, s))
        torch.manual_seed(1)
        assert torch.equal(compiled(_x(b, s)), want)

    for b, s in [(2, 3), (3, 5), (9, 4)]:
        check(b, s)
    warm = counter.frame_count
    for b, s in [(5, 7), (12, 6)]:
        check(b, s)
    assert counter.frame_count == warm <= 3


@torch._inductor.config.patch(
    fallback_random=True
)  # aten's random ops: compiled dropout draws nn.Dropout's masks
def test_inductor_masks_equal_stock_and_saves_only_bytes() -> None:

    def mlp(drop: type[nn.Module]) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.GELU(), drop(0.3), nn.Linear(32, 4)).train()

    x = torch.randn(8, 16)
    stock, patched = mlp(nn.Dropout), mlp(PackedDropout)
    dropped: dict[str, list[torch.Tensor]] = {"stock": [], "patched": []}
    for name, model in (("stock", stock), ("patched", patched)):  # the dropout output is 0 where dropped
        model[2].register_forward_hook(
            lambda mod, inp, out, name=name: dropped[name].append(out.detach() == 0)
        )
    eager = _step(patched, x)
    results = {}
    for name, model in (("stock", stock), ("patched", patched)):
        torch._dynamo.reset()
        results[name] = _step(torch.compile(model, fullgraph=True), x)
    eager_zeros, patched_zeros = dropped["patched"]
    assert torch.equal(patched_zeros, dropped["stock"][0]) and torch.equal(patched_zeros, eager_zeros)
    # inductor fuses the noise multiply with GELU (stock: a separate native_dropout kernel): allclose only
    for other in (results["stock"], eager):
        torch.testing.assert_close(results["patched"][0], other[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(results["patched"][1], other[1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # inductor's partitioner keeps the packed bytes, never the float noise: no more than eager, less than stock
    assert results["patched"][2] <= eager[2] < results["stock"][2]


def test_seeded_exact_under_compile_says_what_to_do() -> None:
    model = torch.compile(
        nn.Sequential(nn.Linear(4, 4), PackedDropout(0.1, storage="seeded")),
        fullgraph=True,
        backend="aot_eager",
    )
    with pytest.raises(
        Exception, match="storage='seeded' with sampler='exact' cannot run under torch.compile"
    ):
        model(torch.randn(2, 4))


def test_pack_saved_bools_and_checkpointing_around_compiled_code() -> None:
    torch.manual_seed(0)
    block = Block().train()

    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = block

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return checkpoint(self.block, x, use_reentrant=False)

    eager = _step(block, _x())
    with pack_saved_bools():
        compiled = _step(torch.compile(block, fullgraph=True, backend="aot_eager"), _x())
    assert torch.equal(compiled[0], eager[0]) and all(map(torch.equal, compiled[1], eager[1]))
    torch._dynamo.reset()
    ckpt = _step(torch.compile(Checkpointed(), fullgraph=True, backend="aot_eager"), _x())
    assert torch.equal(ckpt[0], eager[0]) and all(map(torch.equal, ckpt[1], eager[1]))


# ---- Hugging Face models -------------------------------------------------------------------------


def _bart() -> nn.Module:
    from transformers import BartConfig, BartForSequenceClassification

    config = BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    return BartForSequenceClassification(config)


def _bart_batch(batch: int, seq: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (batch, seq), generator=gen)
    ids[:, -1] = 2  # BART classifies from the final eos token
    return {"input_ids": ids, "labels": torch.randint(0, 2, (batch,), generator=gen)}


HF = {**ARCHS, "bart": Arch("bart", _bart, _bart_batch)}
DENSE = ["bert", "roberta", "distilbert", "gpt2", "vit", "bart"]
MOE = ["mixtral", "qwen2_moe"]


def _model(name: str, **patch: object) -> nn.Module:
    model = HF[name].model()
    model.loss_type = (
        getattr(model, "loss_type", None) or "ForCausalLM"
    )  # no warning_once (a graph break) in loss_function
    patch_model(model, **patch)
    return model


def _compiled_equals_eager(name: str, slack: int = 0, **patch: object) -> None:
    model, inputs = _model(name, **patch), HF[name].inputs(batch=2, seq=8)
    with SavedTensorCensus() as eager_census:
        eager = loss_and_grads(model, inputs)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    try:
        with SavedTensorCensus() as compiled_census:
            loss, grads = loss_and_grads(compiled, inputs)
    except torch._dynamo.exc.Unsupported:
        stock = HF[name].model()
        stock.loss_type = getattr(stock, "loss_type", None) or "ForCausalLM"
        skip_if_stock_cannot_compile(stock, inputs)
        raise
    assert counter.frame_count == 1
    assert_identical((loss, {n.removeprefix("_orig_mod."): g for n, g in grads.items()}), eager)
    assert compiled_census.total_bytes <= eager_census.total_bytes + slack


@pytest.mark.parametrize("name", DENSE)
def test_hf_dropout_patched_model_compiles_fullgraph_with_eager_results(name: str) -> None:
    _compiled_equals_eager(name, attention=False)


# Each layer's checkpointed attention core unpacks the shared mask bytes and builds the same
# constants; AOTAutograd's CSE would merge those ops across layers and then save them (a node of one
# checkpoint used by a later one is MUST_SAVE): the float mask bias, 0-dim scalars. They are built
# per layer (bittensor_core.tracing.constant, layers.checkpointing.region_local; NOTE (CSE)). What remains: the noise
# decode's (8,) uint8 bit-shift vector (bittensor_core/kernels/torch_ref.py `scaled_fields`), shared the same
# way: 8 bytes per compiled graph at 1 bit. (Built by a uint8 cumsum instead, inductor's gradients in
# the MLP test above were not close to eager's, cause not investigated; so it stays, and the bound is
# exact.)
SHIFTS_BYTES = 8


# transformers 5.14 (the tested floor) skips the all-True bidirectional attention mask only when not
# tracing (masking_utils `_ignore_bidirectional_mask_sdpa`: `is_tracing(None)` is True under dynamo),
# so compiled ViT gets a (B, 1, S, S) bool mask eager does not; the packed attention keeps it at
# 1 bit: B * S * ceil(S / 8) = 2 * 17 * 3 bytes (5.23 skips it while tracing too).
TRACED_VIT_MASK_BYTES = 2 * 17 * 3 if Version(transformers.__version__) < Version("5.23") else 0


@pytest.mark.parametrize("name", DENSE)
def test_hf_fully_patched_model_compiles_fullgraph(name: str) -> None:
    _compiled_equals_eager(name, slack=SHIFTS_BYTES + (TRACED_VIT_MASK_BYTES if name == "vit" else 0))


@pytest.mark.parametrize("name", MOE)
def test_hf_moe_patched_model_compiles_fullgraph(name: str) -> None:
    _compiled_equals_eager(name, attention=False)


# ---- DDP -----------------------------------------------------------------------------------------


def _ddp_worker(rank: int, init: str, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD, timeout=GLOO_TIMEOUT)
    ddp = DistributedDataParallel(_model("bert", attention=False))
    compiled = torch.compile(ddp, backend="aot_eager")
    loss_and_grads(compiled, half(HF["bert"].inputs(batch=BATCH), rank), seed=SEED + rank)
    if rank == 0:
        torch.save({n: p.grad for n, p in ddp.module.named_parameters()}, out)
    exit_worker()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_compiled_ddp_gradients_equal_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "rank0.pt"
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_ddp_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=WORLD, join=True)
    got = torch.load(out)
    expected = single_process_grads(_model("bert", attention=False), HF["bert"].inputs(batch=BATCH))
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.equal(got[name], expected[name]), name
