"""A patched model under DDP and FSDP2 (gloo, 2 CPU processes) gets the single-process gradients.

Dropout stays on. Each rank seeds torch's generator with ``SEED + rank`` before its forward, so
its masks are a function of its rank; the single-process reference runs each rank's half of the
global batch from that rank's seed, reproducing the very same masks, and averages the two
gradients as DDP's all-reduce and FSDP's reduce-scatter do. Every process and the reference use
one CPU thread (reductions inside ops then run in one order), halving is exact in floating point
and a sum of two terms has one order, so the gradients agree bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from integrations.huggingface import patch_model

from .gloo_ranks import BATCH, GLOO_TIMEOUT, SEED, WORLD, exit_worker, half, single_process_grads
from .tiny_models import ARCHS

pytest.importorskip("transformers")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)


def _step(model: torch.nn.Module, inputs: dict[str, torch.Tensor], rank: int) -> None:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED + rank)
    model(**half(inputs, rank)).loss.backward()


def _worker(rank: int, init: str, out: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)  # the reference runs with one thread too: same reduction order
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD, timeout=GLOO_TIMEOUT)
    arch = ARCHS["bert"]
    inputs = arch.inputs(batch=BATCH)
    results = {}

    ddp = DistributedDataParallel(arch.model())
    patched = patch_model(ddp).replaced  # patched through the wrapper
    _step(ddp, inputs, rank)
    results["ddp"] = {n: p.grad for n, p in ddp.module.named_parameters()}

    model = arch.model()
    patch_model(model)
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    _step(model, inputs, rank)
    results["fsdp"] = {n: p.grad.full_tensor() for n, p in model.named_parameters()}

    if rank == 0:
        torch.save({"replaced": patched, **results}, out)
    exit_worker()


@pytest.mark.slow
def test_ddp_and_fsdp2_gradients_equal_single_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "rank0.pt"
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only: no network needed
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=WORLD, join=True)
    results = torch.load(out)
    assert results["replaced"]["attention"] == 2 and results["replaced"]["dropout"] > 0

    arch = ARCHS["bert"]
    model = arch.model()
    patch_model(model)
    expected = single_process_grads(model, arch.inputs(batch=BATCH))
    for kind in ("ddp", "fsdp"):
        got = results[kind]
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.equal(got[name], expected[name]), (kind, name)
