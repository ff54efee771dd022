"""patch_model composed with what users stack on it: gradient checkpointing, peft LoRA, CPU bf16
autocast, transformers.Trainer (with checkpointing and torch.compile) and plain state_dict files.

Where the patched model runs the same aten ops as the stock one from the same RNG seed (the
masks are the same draws), results are compared with ``torch.equal``; where it does not, the
test says what holds instead and why.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bittensor_core import PackedBool
from integrations.hf_checkpointing import checkpointing_name, enable_checkpointing
from integrations.huggingface import patch_model, report, unpatch_model
from layers import PackedDropout

from .tiny_models import (
    ARCHS,
    BART,
    assert_identical,
    loss_and_grads,
    stock_experts,
    trainer_losses,
)

pytest.importorskip("transformers")

ATTENTIONS = ["eager", "sdpa"]  # packed attention replays either one's own ops


def _model(name: str, attn: str, checkpointing: bool | None = None) -> nn.Module:
    """ARCHS[name] with `attn` attention (and grouped_mm experts), gradient checkpointing on if given."""
    model = stock_experts(ARCHS[name].model(attn_implementation=attn))
    if checkpointing is not None:
        enable_checkpointing(model, use_reentrant=checkpointing)
    return model


def _packed_model(name: str, attn: str, checkpointing: bool | None = None, **options) -> nn.Module:
    model = _model(name, attn, checkpointing)
    patch_model(model, **options)
    return model


# ---- gradient checkpointing ----------------------------------------------------------------------
@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
@pytest.mark.parametrize("attn", ATTENTIONS)
@pytest.mark.parametrize("name", ["bert", "gpt2", "mixtral"])
def test_checkpointing_plus_patch_equals_checkpointing_alone(name: str, attn: str, reentrant: bool) -> None:
    """Checkpointing restores the RNG state before recomputing a layer, so the recomputed forward
    draws the very masks the first one drew, packed or not."""
    inputs = ARCHS[name].inputs()
    reference = _model(name, attn, checkpointing=reentrant)
    patched = _packed_model(name, attn, checkpointing=reentrant)
    assert getattr(patched, f"is_{checkpointing_name()}") and report(patched).replaced["attention"] == 2
    assert_identical(loss_and_grads(reference, inputs), loss_and_grads(patched, inputs))


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_checkpointing_plus_patch_with_functional_dropout(reentrant: bool) -> None:
    """BART calls F.dropout in its layers. Inside a non-reentrant checkpoint those calls stay stock:
    the checkpoint keeps nothing of them and transformers recomputes the layer's forward without
    its hooks, so forward and recompute must draw alike (else checkpoint's metadata check fails)."""
    inputs = BART.inputs()
    reference = BART.model()
    enable_checkpointing(reference, use_reentrant=reentrant)
    patched = copy.deepcopy(reference)
    patch_model(patched)
    assert_identical(loss_and_grads(reference, inputs), loss_and_grads(patched, inputs))
    # outside the layers (embedding dropouts) calls are packed; inside them only without a checkpoint
    # of their own in forward (reentrant checkpointing runs the layer's forward under no_grad)
    assert report(patched).replaced["functional_dropout"] == (16 if reentrant else 2)


# ---- peft LoRA -------------------------------------------------------------------------------------
def _lora(attn: str = "eager") -> nn.Module:
    peft = pytest.importorskip("peft")
    model = _model("bert", attn)
    torch.manual_seed(5)
    # init_lora_weights=False: B starts random, not 0, so every LoRA weight gets a gradient at once.
    config = peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"], init_lora_weights=False
    )
    return peft.get_peft_model(model, config)


def test_exclude_leaves_lora_dropouts_alone_and_training_bit_identical() -> None:
    """exclude=["lora_dropout"] names peft's ModuleDicts; the nn.Dropout inside each ("default") is
    covered with it. The rest is packed; training is bit-identical either way."""
    reference, patched = _lora(), _lora()
    result = patch_model(patched, exclude=["lora_dropout"])
    lora = {n: m for n, m in patched.base_model.model.named_modules() if "lora_dropout." in n}
    assert len(lora) == 4 and all(type(m) is nn.Dropout for m in lora.values())
    assert {n for n, why in result.skipped if why == "excluded by filter"} == set(lora)
    assert result.replaced["dropout"] == sum(type(m) is nn.Dropout for m in reference.modules()) - 4 > 0
    assert all(torch.equal(a, b) for a, b in zip(_train(reference), _train(patched), strict=True))
    unpatch_model(patched)
    assert not any(isinstance(m, PackedDropout) for m in patched.modules())


def _train(model: nn.Module, steps: int = 3) -> list[torch.Tensor]:
    """`steps` SGD steps on the trainable parameters from fixed seeds; returns the losses."""
    inputs = ARCHS["bert"].inputs()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    losses = []
    for step in range(steps):
        torch.manual_seed(step)
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return losses


def _assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    pairs = zip(a.named_parameters(), b.named_parameters(), strict=True)
    for (name_a, pa), (name_b, pb) in pairs:
        assert name_a == name_b and torch.equal(pa, pb), name_a


def test_lora_training_with_patch_equals_lora_alone_and_adapter_files_are_unchanged(tmp_path: Path) -> None:
    reference, patched = _lora(), _lora()  # skips without peft
    from peft import PeftModel
    from safetensors.torch import load_file

    lora_dropouts = sum(type(m) is nn.Dropout for n, m in patched.named_modules() if "lora_dropout" in n)
    result = patch_model(patched)
    assert lora_dropouts == 4 and result.replaced["attention"] == 2
    assert not any(type(m) is nn.Dropout for m in patched.modules())  # LoRA's dropouts are packed too
    losses, losses_p = _train(reference), _train(patched)
    assert all(torch.equal(a, b) for a, b in zip(losses, losses_p, strict=True)), (losses, losses_p)
    _assert_same_parameters(reference, patched)

    reference.save_pretrained(tmp_path / "stock")
    patched.save_pretrained(tmp_path / "patched")
    config = {d: json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("stock", "patched")}
    assert config["stock"] == config["patched"]
    weights = {d: load_file(tmp_path / d / "adapter_model.safetensors") for d in ("stock", "patched")}
    assert weights["stock"].keys() == weights["patched"].keys()
    assert all(torch.equal(weights["stock"][k], weights["patched"][k]) for k in weights["stock"])
    assert not any("packed" in k for k in weights["patched"])

    loaded = PeftModel.from_pretrained(_model("bert", "eager"), tmp_path / "patched", is_trainable=True)
    _assert_same_parameters(reference, loaded)


def test_unpatch_restores_a_lora_model_then_merge_and_unload_equals_stock() -> None:
    reference, patched = _lora(), _lora()
    modules = dict(patched.named_modules())
    patch_model(patched)
    _train(reference)
    _train(patched)
    assert not any(unpatch_model(patched).replaced.values())
    assert dict(patched.named_modules()) == modules  # the very same module objects, LoRA's included
    assert patched.config._attn_implementation == "eager"
    merged, merged_ref = patched.merge_and_unload(), reference.merge_and_unload()
    assert not any(isinstance(m, PackedDropout) for m in merged.modules())
    _assert_same_parameters(merged_ref, merged)


def test_merge_and_unload_of_a_patched_lora_model_then_unpatch_restores_stock() -> None:
    patched = _lora()
    patch_model(patched)
    merged = patched.merge_and_unload()
    unpatch_model(merged)
    assert not any(isinstance(m, PackedDropout) for m in merged.modules())
    assert merged.config._attn_implementation == "eager"


# ---- CPU bf16 autocast -----------------------------------------------------------------------------
@pytest.mark.parametrize("checkpointing", [None, False], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("name", ["bert", "gpt2", "mixtral"])
def test_bf16_autocast_dropout_patch_is_bit_identical(name: str, checkpointing: bool | None) -> None:
    """PackedDropout multiplies by the same mask in autocast's dtype, so the dropout-only patch is
    bit-identical under autocast too. (The full patch agrees with eager to bf16 rounding only, see
    test_huggingface.py::test_bf16_autocast_matches_eager_to_bf16_rounding.)"""
    inputs = ARCHS[name].inputs(seq=32)
    reference = _model(name, "eager", checkpointing)
    patched = _packed_model(name, "eager", checkpointing, attention=False, router=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result, result_p = loss_and_grads(reference, inputs), loss_and_grads(patched, inputs)
    assert result[0].dtype == torch.float32  # the loss; the logits before it were bf16
    assert_identical(result, result_p)


# ---- transformers.Trainer --------------------------------------------------------------------------
def _trainer_losses(patched: bool, output_dir: Path, **arguments) -> list[float]:
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    model = _packed_model("bert", "eager") if patched else _model("bert", "eager")
    losses = trainer_losses(model, str(output_dir), **{checkpointing_name(): True}, **arguments)
    assert getattr(model, f"is_{checkpointing_name()}")
    return losses


def test_trainer_with_checkpointing_gives_the_stock_losses(tmp_path: Path) -> None:
    stock = _trainer_losses(False, tmp_path / "stock")
    assert len(stock) == 3
    assert _trainer_losses(True, tmp_path / "patched") == stock


@pytest.mark.slow
def test_trainer_with_checkpointing_and_torch_compile_trains_a_patched_model(tmp_path: Path) -> None:
    """Compiled code fuses arithmetic differently from eager, so the compiled patched run is compared
    with the eager stock run to float32 rounding (the masks are the same draws: the packed layers
    draw them in eager code). Stock compiled runs are no reference: inductor draws dropout masks
    from its own RNG, not from torch's generator."""
    eager = _trainer_losses(False, tmp_path / "eager")
    compiled = _trainer_losses(True, tmp_path / "compiled", torch_compile=True)
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-5, atol=1e-6)


# ---- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bert", "mixtral"])
def test_state_dict_files_load_across_patched_and_unpatched_models(name: str, tmp_path: Path) -> None:
    """No packed state leaks into a checkpoint: same keys, plain tensors, strict loads both ways."""
    stock, patched = _model(name, "eager"), _packed_model(name, "eager")
    _train_one(patched, name)  # the patched weights now differ from the stock ones
    torch.save(patched.state_dict(), tmp_path / "patched.pt")
    torch.save(stock.state_dict(), tmp_path / "stock.pt")
    from_patched = torch.load(tmp_path / "patched.pt", weights_only=True)
    from_stock = torch.load(tmp_path / "stock.pt", weights_only=True)
    assert from_patched.keys() == from_stock.keys()
    assert not any(isinstance(t, PackedBool) or t.dtype == torch.uint8 for t in from_patched.values())

    fresh_stock, fresh_patched = _model(name, "eager"), _packed_model(name, "eager")
    fresh_stock.load_state_dict(from_patched, strict=True)
    fresh_patched.load_state_dict(from_stock, strict=True)
    for key, value in fresh_stock.state_dict().items():
        assert torch.equal(value, from_patched[key]), key
    for key, value in fresh_patched.state_dict().items():
        assert torch.equal(value, from_stock[key]), key


def _train_one(model: nn.Module, name: str) -> None:
    loss_and_grads(model, ARCHS[name].inputs())
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
