"""Recomputed activations on real transformers architectures: identical results, less kept.

`wrap_activations` + `during_forward(recompute_scope)` alone (what `patch_model` adds), against the
stock model: losses and every gradient equal bit for bit; the bytes a census sees saved drop by
exactly one activation output per MLP whose activation keeps only its input (GELU, SiLU), and not
at all where it keeps its output (GPT-2's Python tanh GELU).
"""

from __future__ import annotations

import pytest
import torch

from bittensor_core import SavedTensorCensus
from integrations.recompute_activations import during_forward, unwrap_activations, wrap_activations
from layers.activation_recompute import RecomputedActivation, recompute_scope

from .tiny_models import ARCHS, assert_identical, loss_and_grads

BATCH, SEQ = 2, 16
# (arch, bytes of the outputs no longer kept): layers x batch x tokens x intermediate x 4 bytes.
# Mixtral/Qwen2-MoE route each token to 2 experts (SiLU outputs of the routed tokens only), plus
# Qwen2-MoE's shared expert on every token: checked to be > 0 rather than computed.
EXPECTED = {
    "bert": 2 * BATCH * SEQ * 64 * 4,
    "vit": 2 * BATCH * 17 * 64 * 4,  # 16 patches + CLS
    "gpt2": 0,
}


def _saved(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    torch.manual_seed(1)
    with SavedTensorCensus() as census:
        loss = model(**inputs).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return census.total_bytes


@pytest.mark.parametrize("name", ["bert", "vit", "gpt2", "mixtral", "qwen2_moe"])
def test_identical_to_stock_and_keeps_less(name: str) -> None:
    arch = ARCHS[name]
    inputs = arch.inputs(BATCH, SEQ)
    stock, model = arch.model(), arch.model()
    originals = wrap_activations(model)
    handles = during_forward(model, recompute_scope, eager_only=True)
    assert bool(originals) == (name != "gpt2")  # GPT-2's gelu_new keeps intermediates: not wrapped
    assert all(isinstance(model.get_submodule(path), RecomputedActivation) for path in originals)
    for _ in range(2):
        assert_identical(loss_and_grads(stock, inputs), loss_and_grads(model, inputs))
    less = _saved(stock, inputs) - _saved(model, inputs)
    assert less == EXPECTED[name] if name in EXPECTED else less > 0
    for handle in handles:
        handle.remove()
    unwrap_activations(model, originals)
    assert not any(isinstance(m, RecomputedActivation) for m in model.modules())
    assert _saved(stock, inputs) == _saved(model, inputs)


def test_skip_leaves_named_activations_alone() -> None:
    model = ARCHS["bert"].model()
    originals = wrap_activations(model, skip=lambda path: ".layer.0." in path)
    paths = {path for path, m in model.named_modules() if isinstance(m, RecomputedActivation)}
    assert paths == set(originals) and paths and not any(".layer.0." in p for p in paths)


def test_compiles_fullgraph_with_eager_results() -> None:
    arch = ARCHS["bert"]
    inputs = arch.inputs(BATCH, SEQ)
    eager, compiled = arch.model(), arch.model()
    for model in (eager, compiled):
        wrap_activations(model)
        during_forward(model, recompute_scope, eager_only=True)
    torch._dynamo.reset()
    compiled.compile(fullgraph=True, backend="aot_eager")
    assert_identical(loss_and_grads(compiled, inputs), loss_and_grads(eager, inputs))
    assert torch._dynamo.explain(eager)(**inputs).graph_break_count == 0


def test_wrapping_twice_wraps_nothing_more() -> None:
    model = ARCHS["bert"].model()
    assert wrap_activations(model) and not wrap_activations(model)
