"""torch.compile with ``torch._functorch.config.activation_memory_budget < 1``: same masks as eager?

Below budget 1 AOTAutograd's min-cut partitioner recomputes forward ops in backward to keep less;
a random op recomputed there draws fresh numbers (pytorch issue 190758), so backward applies
another mask than forward did. Checked exactly, not by a tolerance: every dropout of a tiny BERT
(p = 0.5) gets a zero "probe" parameter added to its input. The probe's gradient is the gradient
of the dropout's input, exactly 0 where the backward mask dropped (or where the loss does not
depend: the same places in eager and compiled); the dropout output is exactly 0 where the forward
mask dropped. Both zero patterns must be `torch.equal` to eager's.

Backend: "aot_eager_decomp_partition" (inductor's decompositions and its min-cut partitioner, the
one that reads the budget, run by eager kernels: several times faster to compile than inductor on
2 cores) with ``fallback_random`` (aten's random ops, so compiled draws eager's masks). Batch 8,
sequence 32: activations must outweigh the parameters, else the partitioner ignores the budget.
Before `layers/kept_draw.py` the packed test failed at 0.5 and 0.1 (one packed mask's Bernoulli
draw recomputed in backward: 120 and 131 positions differed). See docs/compile.md.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo
import torch._functorch.config
import torch._inductor.config
from torch import nn

from bittensor_core import SavedTensorCensus

from .tiny_models import ARCHS, loss_and_grads

pytest.importorskip("transformers")
from integrations.huggingface import patch_model  # noqa: E402

BACKEND = "aot_eager_decomp_partition"
P = 0.5  # half the elements dropped: a wrong mask shows at about half its positions
BUDGETS = [1.0, 0.5, 0.1]
# The decompositions (layer_norm, softmax, gelu into primitive ops) round differently from eager's
# fused kernels: measured |d loss| 6e-8, |d grad| 1.5e-8 at every budget. A mask drawn afresh in
# backward moves gradients by 3e-3 to 0.1, far outside.
RTOL, ATOL = 1e-5, 1e-6


class Probe(nn.Module):
    """`drop(x + zero)`: `zero.grad` is the gradient of the dropout's input; `dropped` the forward's mask."""

    def __init__(self, drop: nn.Module, shape: torch.Size) -> None:
        super().__init__()
        self.drop, self.zero = drop, nn.Parameter(torch.zeros(shape))
        self.dropped: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(x + self.zero)
        self.dropped = out.detach() == 0
        return out


def _probed_bert(patched: bool) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Probe]]:
    arch = ARCHS["bert"]
    model, inputs = arch.model(), arch.inputs(batch=8, seq=32)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = P  # the attention reads its probability off the module too
    if patched:
        patch_model(model)
    shapes: dict[str, torch.Size] = {}

    def record(name: str, args: tuple) -> None:  # a pre-hook returning a value would replace the args
        shapes[name] = args[0].shape

    hooks = [
        module.register_forward_pre_hook(lambda mod, args, name=name: record(name, args))
        for name, module in model.named_modules()
        if isinstance(module, nn.Dropout)
    ]
    with torch.no_grad():
        model(**inputs)
    for hook in hooks:
        hook.remove()
    probes = {name: Probe(model.get_submodule(name), shape) for name, shape in shapes.items()}
    for name, probe in probes.items():
        model.set_submodule(name, probe)
    return model, inputs, probes


def _masks(probes: dict[str, Probe], grads: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(forward, backward) zero patterns per dropout."""
    forward = {name: probe.dropped for name, probe in probes.items()}
    backward = {name: grads[f"{name}.zero"] == 0 for name in probes}
    return forward, backward


@functools.cache
def _step(patched: bool, budget: float | None) -> dict:
    """One training step of the probed BERT, eager (budget None) or compiled at `budget`."""
    model, inputs, probes = _probed_bert(patched)
    torch._dynamo.reset()
    if budget is None:
        loss, grads = loss_and_grads(model, inputs)
        saved = None
    else:
        compiled = torch.compile(model, fullgraph=True, backend=BACKEND)
        with (
            torch._inductor.config.patch(fallback_random=True),
            torch._functorch.config.patch(activation_memory_budget=budget),
            SavedTensorCensus() as census,
        ):
            loss, grads = loss_and_grads(compiled, inputs)
        grads, saved = {n.removeprefix("_orig_mod."): g for n, g in grads.items()}, census.total_bytes
    torch._dynamo.reset()
    forward, backward = _masks(probes, grads)
    return {"loss": loss, "grads": grads, "forward": forward, "backward": backward, "saved": saved}


def _mismatches(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, int]:
    """Positions per dropout where two zero patterns differ (empty: identical)."""
    assert a.keys() == b.keys()
    return {name: int((a[name] != b[name]).sum()) for name in a if not torch.equal(a[name], b[name])}


def _recomputes(patched: bool, budget: float) -> None:
    """The budget really acts: the compiled step keeps less than at budget 1 (0.84x at 0.5, 0.53x at 0.1)."""
    if budget < 1.0:
        assert _step(patched, budget)["saved"] < 0.9 * _step(patched, 1.0)["saved"]


@pytest.mark.slow
@pytest.mark.parametrize("budget", BUDGETS)
def test_patched_compiled_bert_draws_eager_masks_at_any_budget(budget: float) -> None:
    eager, compiled = _step(True, None), _step(True, budget)
    _recomputes(True, budget)
    assert _mismatches(compiled["forward"], eager["forward"]) == {}
    assert _mismatches(compiled["backward"], eager["backward"]) == {}
    torch.testing.assert_close(compiled["loss"], eager["loss"], rtol=RTOL, atol=ATOL)
    assert compiled["grads"].keys() == eager["grads"].keys()
    for name, grad in compiled["grads"].items():
        torch.testing.assert_close(grad, eager["grads"][name], rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.slow
def test_stock_compiled_bert_redraws_masks_below_budget_one() -> None:
    """The same check on stock BERT: exact at budget 1 (the probes see eager's masks), and at 0.1
    backward applies other masks than forward (pytorch issue 190758)."""
    eager = _step(False, None)
    full = _step(False, 1.0)
    assert (
        _mismatches(full["forward"], eager["forward"])
        == {}
        == _mismatches(full["backward"], eager["backward"])
    )
    low = _step(False, 0.1)
    _recomputes(False, 0.1)
    assert _mismatches(low["forward"], eager["forward"]) == {}  # forward draws eager's masks
    if not _mismatches(low["backward"], eager["backward"]):
        pytest.skip(
            f"stock backward masks equal eager's at budget 0.1 on torch {torch.__version__}: "
            "pytorch issue 190758 fixed here? Update docs/compile.md."
        )
