"""The worked example of docs/mask-types.md, run from the document itself."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from .helpers import bits_equal, leaf, saved_bytes

DOC = Path(__file__).resolve().parents[2] / "docs" / "mask-types.md"


@pytest.fixture(scope="module")
def example() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2, "the worked example is the doc's two python blocks"
    namespace: dict = {}
    exec(compile(blocks[0] + blocks[1], str(DOC), "exec"), namespace)  # runs the doc's own assert
    return namespace


@pytest.mark.parametrize("storage", ["packed", "seeded"])
def test_doc_example_is_bit_identical_to_dropout2d(example: dict, storage: str) -> None:
    x, grad = leaf(4, 6, 3, 5), leaf(4, 6, 3, 5, seed=1)
    results = []
    for fn in (lambda t: example["channel_dropout"](t, 0.4, storage=storage), lambda t: F.dropout2d(t, 0.4)):
        xi = x.detach().clone().requires_grad_()
        torch.manual_seed(5)
        out = fn(xi)
        out.backward(grad)
        results.append((out, xi.grad, torch.get_rng_state()))
    (out, grad_x, rng), (ref, ref_grad, ref_rng) = results
    assert bits_equal(out, ref) and bits_equal(grad_x, ref_grad) and torch.equal(rng, ref_rng)


def test_doc_example_saves_one_bit_per_channel(example: dict) -> None:
    x = leaf(16, 64, 4, 4)
    _, census = saved_bytes(example["channel_dropout"], x, 0.2)
    assert census.total_bytes == 16 * math.ceil(64 / 8)


def test_doc_example_gradcheck(example: dict) -> None:
    x = leaf(3, 4, 2, 2, dtype=torch.float64)

    def fn(t: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)
        return example["channel_dropout"](t, 0.5)

    assert torch.autograd.gradcheck(fn, (x,))
