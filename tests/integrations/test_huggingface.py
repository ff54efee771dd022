"""patch_model / unpatch_model / report on small random transformers models, one per architecture."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bittensor_core import SavedTensorCensus
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from integrations.hf_attention import STOCK
from integrations.huggingface import patch_model, report, unpatch_model
from layers import PackedDropout

from .tiny_models import ARCHS, BART, assert_identical, loss_and_grads

pytest.importorskip("transformers")

NAMES = list(ARCHS)
# Attention modules per tiny model (2 layers each); MoE blocks per model; recomputed activations:
# one GELU per MLP (BERT-style), none for GPT-2 (gelu_new keeps intermediates), SiLU per expert MLP.
ATTENTION, ROUTERS = 2, {"mixtral": 2, "qwen2_moe": 2}
ACTIVATIONS = {"gpt2": 0, "mixtral": 2, "qwen2_moe": 4}


def _count_dropouts(model: nn.Module) -> int:
    return sum(type(m) is nn.Dropout for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_report_counts_what_was_packed(name: str) -> None:
    model = ARCHS[name].model()
    dropouts = _count_dropouts(model)
    result = patch_model(model)
    assert result.replaced == {
        "dropout": dropouts,
        "functional_dropout": 0,
        "attention": ATTENTION,
        "router": ROUTERS.get(name, 0),
        "activation": ACTIVATIONS.get(name, 2),
    }
    assert result.attn_implementation == "packedbool" == model.config._attn_implementation
    assert result.experts_implementation == ("packedbool" if name in ROUTERS else None)
    assert _count_dropouts(model) == 0
    assert report(model) == result
    assert "packed: dropout=" in str(result)


@pytest.mark.parametrize("name", NAMES)
def test_dropout_only_patch_is_bit_identical(name: str) -> None:
    """Swapping nn.Dropout alone changes no math: same losses and gradients, bit for bit."""
    arch = ARCHS[name]
    inputs = arch.inputs()
    reference = arch.model()
    patched = arch.model()
    patch_model(patched, attention=False, router=False)
    assert_identical(loss_and_grads(reference, inputs), loss_and_grads(patched, inputs))


@pytest.mark.parametrize("name", ["bert", "gpt2", "mixtral"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_bf16_autocast_is_bit_identical(name: str, impl: str) -> None:
    """Under CPU bf16 autocast too: packed SDPA casts its inputs as autocast does around SDPA and runs
    the math path with autocast off; the eager reference is the model's own code under autocast."""
    arch = ARCHS[name]
    inputs = arch.inputs(seq=32)
    reference = arch.model(attn_implementation=impl)
    if name in ROUTERS:
        reference.set_experts_implementation("grouped_mm")  # what the packed router reproduces
    model = copy.deepcopy(reference)
    patch_model(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_identical(loss_and_grads(reference, inputs), loss_and_grads(model, inputs))


def _census_before_after(reference, inputs):
    """Saved-tensor censuses of one step of `reference` and of a patched deep copy of it."""
    patched = copy.deepcopy(reference)
    patch_model(patched)
    with SavedTensorCensus() as before:
        loss_and_grads(reference, inputs)
    with SavedTensorCensus() as after:
        loss_and_grads(patched, inputs)
    return before, after


@pytest.mark.parametrize("name", NAMES)
def test_census_drops_by_the_mask_share(name: str) -> None:
    """Against the unpatched model's default implementation: every mask now costs 1 bit, not 4 bytes."""
    arch = ARCHS[name]
    before, after = _census_before_after(arch.model(), arch.inputs(batch=2, seq=32))
    # Each packed mask element held 4 float32 bytes of F.dropout noise before (CPU); sequence and
    # hidden sizes are multiples of 8, so packed bytes * 8 is the exact mask element count.
    assert after.packed_bytes > 0
    assert before.total_bytes - after.total_bytes >= 31 * after.packed_bytes
    assert after.bytes_by_dtype[torch.bool] == after.packed_bytes  # every saved bool is packed


def test_bert_seq128_census_drop_at_least_30_percent() -> None:
    """The issue's acceptance figure: BERT, seq 128, dropout 0.1, default attention, CPU."""
    arch = ARCHS["bert"]
    reference = arch.model()
    assert reference.config._attn_implementation == "sdpa"
    before, after = _census_before_after(reference, arch.inputs(batch=2, seq=128))
    drop = 1 - after.total_bytes / before.total_bytes
    assert drop >= 0.30, f"saved-for-backward bytes dropped only {drop:.1%}"


@pytest.mark.parametrize("name", ["bert", "gpt2", "mixtral"])
def test_unpatch_restores_modules_and_implementations(name: str) -> None:
    arch = ARCHS[name]
    model = arch.model()
    before = dict(model.named_modules())
    attn, experts = model.config._attn_implementation, model.config._experts_implementation
    patch_model(model)
    result = unpatch_model(model)
    assert not any(result.replaced.values())
    after = dict(model.named_modules())
    assert before.keys() == after.keys()
    assert all(before[k] is after[k] for k in before)  # the very same module objects
    assert (model.config._attn_implementation, model.config._experts_implementation) == (attn, experts)
    assert unpatch_model(model).replaced["dropout"] == 0  # unpatching an unpatched model is a no-op


def test_patching_twice_is_harmless_and_takes_the_new_options() -> None:
    arch = ARCHS["bert"]
    inputs = arch.inputs()
    reference = arch.model()
    model = arch.model()
    originals = {n: m for n, m in model.named_modules() if type(m) is nn.Dropout}
    first = patch_model(model)
    second = patch_model(model, bits=4, unpack="cached")
    assert first.replaced == second.replaced
    assert second.attn_implementation == "packedbool-b4-cached"
    drops = [m for m in model.modules() if isinstance(m, PackedDropout)]
    assert all(m.options.bits == 4 and m.options.unpack == "cached" for m in drops)
    assert_identical(loss_and_grads(reference, inputs), loss_and_grads(model, inputs))
    unpatch_model(model)
    assert all(model.get_submodule(n) is m for n, m in originals.items())
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_bits_set_the_mask_width_not_the_results(bits: int) -> None:
    arch = ARCHS["gpt2"]
    inputs = arch.inputs(seq=32)
    reference = arch.model()
    model = arch.model()
    patch_model(model, bits=bits)
    with SavedTensorCensus() as census:
        result = loss_and_grads(model, inputs)
    assert_identical(loss_and_grads(reference, inputs), result)
    one_bit = arch.model()
    patch_model(one_bit, bits=1)
    with SavedTensorCensus() as census_1:
        loss_and_grads(one_bit, inputs)
    assert census.packed_bytes == bits * census_1.packed_bytes


def test_eval_mode_and_generation_match_the_unpatched_model() -> None:
    arch = ARCHS["gpt2"]
    reference = arch.model().eval()
    model = arch.model().eval()
    patch_model(model)
    inputs = arch.inputs(seq=16)
    with torch.no_grad():
        assert torch.equal(reference(**inputs).logits, model(**inputs).logits)
    prompt = inputs["input_ids"][1:, :8]
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(reference.generate(prompt, **kwargs), model.generate(prompt, **kwargs))


def test_masks_reach_the_attention_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mask function hands each attention layer the padding + causal mask as a PackedBool."""
    from bittensor_core import PackedBool
    from integrations import hf_attention

    seen = []
    original = hf_attention.attention_with

    def spy(*args, **kwargs):
        seen.append(kwargs["attn_mask"])
        return original(*args, **kwargs)

    monkeypatch.setattr(hf_attention, "attention_with", spy)
    arch = ARCHS["gpt2"]
    model = arch.model()
    patch_model(model)
    inputs = arch.inputs(seq=16)  # row 0 is padded
    model(**inputs)
    assert len(seen) == ATTENTION
    mask = seen[0]
    assert isinstance(mask, PackedBool) and mask.shape == (2, 1, 16, 16)
    keep = torch.ones(16, 16, dtype=torch.bool).tril() & inputs["attention_mask"].bool()[:, None, None, :]
    assert torch.equal(mask.unpack(), keep)


def test_save_pretrained_from_a_patched_model_loads_unpatched(tmp_path) -> None:
    arch = ARCHS["bert"]
    model = arch.model()
    patch_model(model)
    model.save_pretrained(tmp_path)
    assert "packedbool" not in (tmp_path / "config.json").read_text()
    loaded = type(model).from_pretrained(tmp_path)
    assert loaded.config._attn_implementation == "sdpa"
    assert _count_dropouts(loaded) == _count_dropouts(arch.model())
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_functional_dropout_is_packed_and_unhooked() -> None:
    """BART's dropouts are F.dropout calls; while the model runs they go through packed_dropout
    (bit-identical: tests/integrations/test_faithful_attention.py) and save 1 bit per element."""
    model = BART.model()
    inputs = BART.inputs()
    stock_calls = _functional_dropout_calls(BART.model(), inputs)
    result = patch_model(model)
    assert result.replaced["functional_dropout"] == 0 and result.replaced["attention"] == 6  # 4 self, 2 cross
    assert not [why for _, why in result.skipped if "functional" in why]
    with SavedTensorCensus() as census:
        loss_and_grads(model, inputs)
    assert census.bytes_by_dtype.get(torch.float32, 0) > 0
    assert (
        report(model).replaced["functional_dropout"] == stock_calls >= 2 * 3 + 2 * 4
    )  # observed, per forward
    with SavedTensorCensus() as unhooked:
        unpatch_model(model)
        assert not model._forward_pre_hooks and not model._forward_hooks
        loss_and_grads(model, inputs)
    assert unhooked.total_bytes > census.total_bytes


def _functional_dropout_calls(model: nn.Module, inputs: dict) -> int:
    """How many F.dropout / torch.dropout calls one forward of the unpatched `model` makes."""
    from integrations.functional_dropout import DropoutRoute

    calls = []
    with DropoutRoute(
        lambda x, p, training, inplace: calls.append(p) or torch.nn.functional.dropout(x, p, training)
    ):
        model(**inputs)
    return len(calls)


def test_plain_module_and_skipped_kinds_are_reported() -> None:
    """A non-transformers model gets its dropouts swapped; the rest is reported with reasons."""
    shared = nn.Dropout(0.2)
    model = nn.Sequential(nn.Linear(8, 8), shared, nn.Dropout2d(0.1), nn.Linear(8, 8), shared)
    result = patch_model(model)
    assert result.replaced == {
        "dropout": 1,
        "functional_dropout": 0,
        "attention": 0,
        "router": 0,
        "activation": 0,
    }
    assert model[1] is model[4] and isinstance(model[1], PackedDropout)  # shared stays shared
    skipped = dict(result.skipped)
    assert "Dropout2d" in skipped["2"]
    assert "PreTrainedModel" in skipped["attention"]
    unpatch_model(model)
    assert model[1] is shared and model[4] is shared


def test_wrapped_models_are_patched_inside_but_user_wrappers_are_models() -> None:
    arch = ARCHS["bert"]
    model = arch.model()
    wrapper = nn.DataParallel(model)  # unwrapped by type, like DDP / FSDP / torch.compile
    assert patch_model(wrapper).attn_implementation == "packedbool"
    assert model.config._attn_implementation == "packedbool"
    unpatch_model(wrapper)
    assert model.config._attn_implementation == "sdpa"

    class Head(nn.Module):  # a user's module that happens to call its model `.module`
        def __init__(self) -> None:
            super().__init__()
            self.module, self.drop = model, nn.Dropout(0.1)

    head = Head()
    result = patch_model(head)
    assert (
        isinstance(head.drop, PackedDropout)
        and result.replaced["dropout"] == _count_dropouts(arch.model()) + 1
    )
    unpatch_model(head)
    assert type(head.drop) is nn.Dropout


@pytest.mark.parametrize("bad", [None, "bert-base-uncased", torch.ones(2)])
def test_non_modules_raise_type_error(bad: object) -> None:
    with pytest.raises(PackedBoolTypeError, match="torch.nn.Module"):
        patch_model(bad)


@pytest.mark.parametrize("patched_in, then", [("train", "eval"), ("eval", "train")])
def test_unpatch_restores_modules_in_the_current_mode(patched_in: str, then: str) -> None:
    model = ARCHS["bert"].model()
    getattr(model, patched_in)()
    patch_model(model)
    getattr(model, then)()
    unpatch_model(model)
    assert all(m.training == (then == "train") for m in model.modules())


def test_models_sharing_a_config_are_patched_apart() -> None:
    arch = ARCHS["gpt2"]
    a = arch.model()
    b = type(a)(a.config).train()
    assert b.config is a.config
    b_alone = copy.deepcopy(b)
    patch_model(a)
    assert a.config._attn_implementation == "packedbool" and b.config._attn_implementation == "sdpa"
    assert all(getattr(m, "config", a.config) is a.config for m in a.modules())  # a's modules read a's copy
    assert report(b).attn_implementation is None
    inputs = arch.inputs()
    assert_identical(loss_and_grads(b, inputs), loss_and_grads(b_alone, inputs))
    assert unpatch_model(a).replaced["attention"] == 0 and a.config is b.config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bits": 3}, "bits=3"),
        ({"unpack": "eager"}, "unpack='eager'"),
        ({"storage": "disk"}, "storage='disk'"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs: dict, match: str) -> None:
    model = ARCHS["bert"].model()
    with pytest.raises(PackedBoolValueError, match=match):
        patch_model(model, **kwargs)
    assert model.config._attn_implementation == "sdpa"  # nothing half-patched


def test_a_failing_patch_leaves_the_model_unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    from integrations import hf_attention

    def broken(*args, **kwargs):
        raise RuntimeError("registry unavailable")

    monkeypatch.setattr(hf_attention, "register_attention", broken)
    model = ARCHS["bert"].model()
    modules = dict(model.named_modules())
    with pytest.raises(RuntimeError, match="registry unavailable"):
        patch_model(model)
    assert all(model.get_submodule(n) is m for n, m in modules.items() if n)
    assert not any(report(model).replaced.values())


def test_import_integrations_is_cheap() -> None:
    code = "import sys, integrations; print('transformers' in sys.modules, 'layers' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False", "False"]


def test_functional_dropout_in_a_custom_module_is_packed_bit_identically() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.nn.functional.dropout(self.linear(x), 0.3, self.training)
            return torch.dropout(h, 0.2, self.training).sum()

    torch.manual_seed(0)
    reference = Block()
    model = copy.deepcopy(reference)
    assert patch_model(model).replaced["functional_dropout"] == 0  # not run yet
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    expected = reference(x)
    with SavedTensorCensus() as census:
        torch.manual_seed(3)
        got = model(x)
    assert (
        torch.equal(got, expected) and census.bytes_by_dtype.get(torch.float32, 0) == 4 * x.numel()
    )  # x only
    assert report(model).replaced["functional_dropout"] == 2  # both calls, observed
    unpatch_model(model)
    assert (
        not model._forward_pre_hooks and patch_model(model, dropout=False).replaced["functional_dropout"] == 0
    )


# ---- include / exclude filters --------------------------------------------------------------------
def test_include_packs_only_the_chosen_layer_bit_identically() -> None:
    """include names layer 0 of BERT's encoder: its dropouts and attention are packed, layer 1, the
    embeddings and the classifier run stock (attention through the same registered function, which
    runs the reference unchanged for them), and training is bit-identical."""
    arch = ARCHS["bert"]
    inputs = arch.inputs(seq=32)
    reference, model = arch.model(), arch.model()
    before = dict(model.named_modules())
    result = patch_model(model, include=r"bert\.encoder\.layer\.0")
    packed = {n for n, m in model.named_modules() if isinstance(m, PackedDropout)}
    assert packed and all(n.startswith("bert.encoder.layer.0.") for n in packed)
    assert result.replaced["dropout"] == len(packed) and result.replaced["attention"] == 1
    excluded = {n for n, why in result.skipped if why == "excluded by filter"}
    assert "bert.encoder.layer.1.attention.self" in excluded and "bert.embeddings.dropout" in excluded
    assert not any(n.startswith("bert.encoder.layer.0.") for n in excluded)
    with SavedTensorCensus() as census:
        assert_identical(loss_and_grads(reference, inputs), loss_and_grads(model, inputs))
    full = copy.deepcopy(reference)
    patch_model(full)
    with SavedTensorCensus() as census_full:
        loss_and_grads(full, inputs)
    assert 0 < census.packed_bytes < census_full.packed_bytes and census.total_bytes > census_full.total_bytes
    unpatch_model(model)
    assert all(model.get_submodule(n) is m for n, m in before.items() if n)
    assert not any(hasattr(m, STOCK) for m in model.modules())
    assert model.config._attn_implementation == "sdpa"


def test_exclude_keeps_functional_dropouts_of_a_block_stock() -> None:
    """BART with its decoder excluded: only the encoder's F.dropout calls are packed (observed: the
    embedding dropout and three per layer), and training stays bit-identical."""
    inputs = BART.inputs()
    reference, model = BART.model(), BART.model()
    result = patch_model(model, exclude=r"model\.decoder")
    assert result.replaced["attention"] == 2 and ("model.decoder", "excluded by filter") in result.skipped
    assert_identical(loss_and_grads(reference, inputs), loss_and_grads(model, inputs))
    assert report(model).replaced["functional_dropout"] == 1 + 2 * 3


def test_excluded_attention_runs_stock_where_the_declared_module_wraps_the_caller(monkeypatch) -> None:
    """T5 declares T5LayerSelfAttention as its attention; the T5Attention inside calls the attention
    function. Excluding encoder block 0 leaves its attention stock: 5 of 6 attention calls packed (each
    passes position_bias: the reference runs inside the packed function's checkpoint)."""
    import transformers

    from integrations import hf_attention

    from .tiny_models import T5

    calls = []
    original = hf_attention.checkpoint_core
    monkeypatch.setattr(hf_attention, "checkpoint_core", lambda *a, **k: calls.append(1) or original(*a, **k))
    inputs = T5.inputs()
    reference, model = T5.model(), T5.model()
    result = patch_model(model, exclude=["encoder.block.0"])
    if result.attn_implementation is None:
        pytest.skip(
            f"T5 does not dispatch through AttentionInterface in transformers {transformers.__version__}"
        )
    assert result.replaced["attention"] == 5
    assert_identical(loss_and_grads(reference, inputs), loss_and_grads(model, inputs))
    assert len(calls) == 5
    unpatch_model(model)
    assert not any(hasattr(m, STOCK) for m in model.modules())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"include": "layer.(0"},
            PackedBoolValueError,
            r"include='layer.\(0' is not a valid regular expression",
        ),
        ({"exclude": "encoder"}, PackedBoolValueError, "exclude='encoder' matches no module name .* prefix"),
        ({"exclude": ["query", "nope"]}, PackedBoolValueError, r"\['nope'\] names no module"),
        ({"include": []}, PackedBoolValueError, "the empty list"),
        ({"include": 3}, PackedBoolTypeError, "include=3"),
    ],
)
def test_bad_filters_raise_naming_the_pattern(kwargs: dict, error: type, match: str) -> None:
    model = ARCHS["bert"].model()
    with pytest.raises(error, match=match):
        patch_model(model, **kwargs)
    assert model.config._attn_implementation == "sdpa" and not report(model).skipped
    assert not any(isinstance(m, PackedDropout) for m in model.modules())


def test_experts_other_than_the_reference_are_left_as_they_are() -> None:
    """Packed routing reproduces grouped_mm; a model on the eager loop would round differently."""
    model = ARCHS["mixtral"].model()
    model.set_experts_implementation("eager")
    result = patch_model(model)
    assert result.replaced["router"] == 0 and model.get_experts_implementation() == {"": "eager"}
    assert "grouped_mm" in dict(result.skipped)["router"]


def test_a_user_package_named_layers_is_not_taken_for_ours() -> None:
    from integrations.hf_detection import may_call_dropout

    class UserBlock(nn.Module):
        pass

    UserBlock.__module__ = "layers.user_blocks"  # a user's own package that happens to be named `layers`
    assert may_call_dropout(UserBlock())  # code we cannot vouch for: its F.dropout calls are routed
    assert not may_call_dropout(PackedDropout(0.1))  # ours: packs its own dropout
