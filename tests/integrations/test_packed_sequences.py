"""Packed sequences: several sequences in one row, told apart by ``position_ids`` restarting at 0.

transformers builds the block-diagonal encoder mask from ``position_ids`` (no ``attention_mask``)
where ``masking_utils.create_bidirectional_mask`` takes them (5.25; BERT passes them). A patched
BERT gets that mask packed from the same mask function and trains bit-identically to stock.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from bittensor_core import PackedBool
from integrations.huggingface import patch_model

from .tiny_models import ARCHS, assert_identical, loss_and_grads

transformers = pytest.importorskip("transformers")
from transformers import masking_utils  # noqa: E402

if "position_ids" not in inspect.signature(masking_utils.create_bidirectional_mask).parameters:
    pytest.skip(
        f"transformers {transformers.__version__} builds no packed-sequence encoder mask "
        "(create_bidirectional_mask takes no position_ids; 5.25 does)",
        allow_module_level=True,
    )

LENGTHS = [[6, 10], [3, 9, 4]]  # two rows of 16 tokens: 2 and 3 sequences


def _packed_batch() -> dict[str, torch.Tensor]:
    inputs = ARCHS["bert"].inputs(batch=len(LENGTHS), seq=16)
    positions = torch.tensor([[p for n in row for p in range(n)] for row in LENGTHS])
    return {"input_ids": inputs["input_ids"], "position_ids": positions, "labels": inputs["labels"]}


def _block_diagonal() -> torch.Tensor:
    """(batch, 1, 16, 16): True where query and key lie in the same sequence."""
    segment = torch.tensor([[i for i, n in enumerate(row) for _ in range(n)] for row in LENGTHS])
    return (segment[:, :, None] == segment[:, None, :])[:, None]


def _record_masks(model: torch.nn.Module) -> list:
    """The attention_mask each self-attention module of `model` is called with, in call order."""
    masks = []
    for module in model.modules():
        if type(module).__name__ == "BertSelfAttention":
            hook = lambda _, args, kwargs: masks.append(kwargs["attention_mask"])  # noqa: E731
            module.register_forward_pre_hook(hook, with_kwargs=True)
    return masks


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_sequences_train_bit_identically_with_the_mask_packed(impl: str) -> None:
    reference = ARCHS["bert"].model(attn_implementation=impl)
    patched = copy.deepcopy(reference)
    patch_model(patched)
    masks = _record_masks(patched)
    inputs = _packed_batch()

    assert_identical(loss_and_grads(reference, inputs), loss_and_grads(patched, inputs))
    assert len(masks) == 2  # one per layer
    for mask in masks:
        assert isinstance(mask, PackedBool) and mask.bits == 1
        assert torch.equal(mask.unpack(), _block_diagonal())
