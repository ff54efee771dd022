"""Eval mode, no_grad / inference_mode and p = 0 take the stock path: the patched model's outputs equal
the unpatched model's bit for bit, and none of packedbool's packing machinery runs: no dropout route
seeing ops, no packed attention core or checkpoint, no mask packed or drawn by us, no saved-tensor
hooks, and no hook left on the dropout modules once they have run."""

from __future__ import annotations

import copy
import cProfile
import gc
import importlib
import pstats
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from bittensor_core import kernels
from integrations import hf_attention, patch_model
from integrations.functional_dropout import DropoutRoute
from integrations.patch_kind import RAN
from layers import PackedDropout

from .tiny_models import ARCHS, BART, LLAMA, Arch, assert_identical, loss_and_grads

dropout_module = importlib.import_module("layers.dropout")
activation_recompute = importlib.import_module("layers.activation_recompute")

# (arch, attention implementation before patching)
MODELS = {
    "gpt2": (ARCHS["gpt2"], "sdpa"),
    "llama": (LLAMA, "sdpa"),
    "llama-eager": (LLAMA, "eager"),
    "bart": (BART, "sdpa"),  # its dropouts are F.dropout calls: the functional route
}
DECODERS = ["gpt2", "llama", "llama-eager"]
# what `work` counts of dropout and attention dropout (not the mask packed, nor activation recompute)
DROPOUT_WORK = ("packed attention", "attention checkpoint", "packed dropout", "op seen by the dropout route")


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts calls into the packed paths: each would be extra work on the stock path."""
    counts: Counter = Counter()

    def counted(name: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(kernels, "pack", counted("mask packed", kernels.pack))
    monkeypatch.setattr(
        hf_attention, "attention_with", counted("packed attention", hf_attention.attention_with)
    )
    monkeypatch.setattr(
        hf_attention, "checkpoint_core", counted("attention checkpoint", hf_attention.checkpoint_core)
    )
    monkeypatch.setattr(dropout_module, "can_fuse", counted("packed dropout", dropout_module.can_fuse))
    monkeypatch.setattr(
        DropoutRoute,
        "__torch_function__",
        counted("op seen by the dropout route", DropoutRoute.__torch_function__),
    )
    monkeypatch.setattr(
        activation_recompute, "_Scope", counted("saved-tensor hooks", activation_recompute._Scope)
    )
    return counts


def _pair(name: str) -> tuple[nn.Module, nn.Module, Arch]:
    arch, impl = MODELS[name]
    stock = arch.model(attn_implementation=impl)
    patched = copy.deepcopy(stock)
    patch_model(patched)
    return stock, patched, arch


def _prompts(arch: Arch) -> dict[str, torch.Tensor]:
    """Two prompts of 12 tokens, the first left-padded by 3, so that generation builds a padding mask."""
    ids = arch.inputs(seq=12)["input_ids"]
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model: nn.Module, inputs: dict[str, torch.Tensor], seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    return model(**inputs).logits


def _no_hooks_left_on_dropouts_that_ran(model: nn.Module) -> bool:
    """Each packed dropout module that ran is called through nn.Module's fast path again (one that never
    runs, GPT-2's attn_dropout, keeps its flag hook: never called, it costs nothing)."""
    ran = [m for m in model.modules() if isinstance(m, PackedDropout) and RAN in m.__dict__]
    return bool(ran) and not any(m._forward_hooks for m in ran)


@pytest.mark.parametrize("name", DECODERS)
def test_eval_generate_is_stock_and_does_no_packing_work(name: str, work: Counter) -> None:
    stock, patched, arch = _pair(name)
    prompts = _prompts(arch)
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    for model in (stock, patched):
        model.eval()
    assert torch.equal(patched.generate(**prompts, **kwargs), stock.generate(**prompts, **kwargs))
    with torch.no_grad():
        assert torch.equal(_logits(patched, arch.inputs()), _logits(stock, arch.inputs()))
    assert not +work, dict(work)
    assert name != "gpt2" or _no_hooks_left_on_dropouts_that_ran(patched)  # Llama has no nn.Dropout


# The Python calls outside packedbool that the patched model may add: nn.Module's call path into a wrapper
# module (RecomputedActivation); on a model with forward hooks (the activation-recompute scope) its hooks
# path, `inner`, which asks is_compiling; and AttentionInterface's membership check of a registered name
# (stock "eager" is its default, looked up without one).
ALLOWED = {"_wrapped_call_impl", "_call_impl", "inner", "is_compiling", "is_scripting", "__contains__"}
REPO = str(Path(__file__).resolve().parents[2])


def _work(model: nn.Module, generate: Callable[[nn.Module], torch.Tensor]) -> tuple[Counter, Counter]:
    """(aten op counts, Python calls per function named "file:name") of one `generate(model)`."""
    generate(model)  # warm: first-call imports and caches
    gc.collect()
    gc.disable()  # no finalizer running in one profile and not the other
    try:
        with torch.profiler.profile() as prof:
            generate(model)
        profiler = cProfile.Profile()
        profiler.runcall(generate, model)
    finally:
        gc.enable()
    ops = Counter({e.key: e.count for e in prof.key_averages()})
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (primitive calls, calls, ...)
    calls = Counter({f"{file}:{name}": counts[1] for (file, _, name), counts in stats.items() if file != "~"})
    return ops, calls


@pytest.mark.parametrize("name", DECODERS)
def test_eval_generate_runs_the_stock_code_and_only_packedbool_wrappers_more(name: str) -> None:
    """Eval generate() runs what stock runs: no transformers function more often (its mask builder and
    attention function: no slower path for the packed implementation's name; but the lookup of the
    implementation in transformers' registry, which 5.14's Llama skips for "eager" only), no aten op
    more often, and
    no torch Python function more often beyond nn.Module's call path into packedbool's wrappers. What the
    wrappers add is their own frames only: no nn.Module.__getattr__ miss, ABC isinstance, context manager
    or tracing question per call (issue 23: such per-call work made eval generate() slower than stock)."""
    stock, patched, arch = _pair(name)
    prompts = _prompts(arch)

    def generate(model: nn.Module) -> torch.Tensor:
        return model.generate(**prompts, max_new_tokens=4, do_sample=False, pad_token_id=0)

    (stock_ops, stock_calls), (ops, calls) = (_work(m.eval(), generate) for m in (stock, patched))
    assert not ops - stock_ops, dict(ops - stock_ops)
    registry = "/transformers/utils/generic.py:__getitem__"  # GeneralInterface: ALL_ATTENTION_FUNCTIONS[...]
    transformers = {f for f in calls | stock_calls if "/transformers/" in f and not f.endswith(registry)}
    assert all(calls[f] <= stock_calls[f] for f in transformers), {
        f: (stock_calls[f], calls[f]) for f in transformers if calls[f] > stock_calls[f]
    }
    extra = Counter({f: n for f, n in (calls - stock_calls).items() if not f.startswith(REPO)})
    assert not [f for f in extra if f.rpartition(":")[2] not in ALLOWED], dict(extra)
    hooked = sum(n for f, n in extra.items() if f.endswith(":inner"))
    assert sum(n for f, n in extra.items() if f.endswith(":is_compiling")) <= hooked, dict(extra)


@pytest.mark.parametrize("grad_off", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("name", list(MODELS))
def test_training_mode_without_grad_is_stock_and_does_no_packing_work(
    name: str, grad_off: Callable, work: Counter
) -> None:
    """Dropout on (train mode) but no graph: nothing is kept for backward, so the stock ops draw the masks."""
    stock, patched, arch = _pair(name)
    inputs = arch.inputs()
    with grad_off():
        assert torch.equal(_logits(patched, inputs), _logits(stock, inputs))
    assert not +work, dict(work)


@pytest.mark.parametrize("name", list(MODELS))
def test_eval_mode_with_grad_is_stock_and_runs_no_dropout_machinery(name: str, work: Counter) -> None:
    """Eval mode under autograd (dropout off): same loss and gradients, and nothing of dropout runs. (The
    attention mask is still packed: the mask function cannot see the mode.)"""
    stock, patched, arch = _pair(name)
    inputs = arch.inputs()
    assert_identical(loss_and_grads(patched.eval(), inputs), loss_and_grads(stock.eval(), inputs))
    assert not [work[kind] for kind in DROPOUT_WORK if work[kind]], dict(work)


def test_p_zero_training_is_stock_and_runs_no_dropout_machinery(work: Counter) -> None:
    from transformers import GPT2LMHeadModel

    config = ARCHS["gpt2"].build().config
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    torch.manual_seed(0)
    stock = GPT2LMHeadModel(config).train()
    patched = copy.deepcopy(stock)
    patch_model(patched)
    inputs = ARCHS["gpt2"].inputs()
    assert_identical(loss_and_grads(patched, inputs), loss_and_grads(stock, inputs))
    assert not [work[kind] for kind in DROPOUT_WORK if work[kind]], dict(work)
