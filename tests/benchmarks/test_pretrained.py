"""A real pretrained model on real data: all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes sentences."""

from __future__ import annotations

import copy

import pytest
import torch

from bittensor_core import SavedTensorCensus
from integrations.huggingface import patch_model

pytest.importorskip("transformers")

from benchmarks.kit.sources import SourceUnavailableError, load_pretrained, sentiment_splits  # noqa: E402

STEPS, BATCH = 3, 6


def _sources():
    try:
        torch.manual_seed(0)  # the fresh classification head
        model, tokenizer = load_pretrained(num_labels=2)
        train, _ = sentiment_splits(seed=0, limit=STEPS * BATCH)
    except SourceUnavailableError as exc:
        pytest.skip(str(exc))
    return model, tokenizer, train


def _fine_tune(model, tokenizer, train) -> tuple[list[torch.Tensor], list[int]]:
    """STEPS SGD steps on real batches; returns the losses and each step's saved bytes."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    torch.manual_seed(1)
    losses, saved = [], []
    for step in range(STEPS):
        texts, labels = zip(*train[step * BATCH : (step + 1) * BATCH], strict=True)
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=32, return_tensors="pt")
        with SavedTensorCensus() as census:
            loss = model(**batch, labels=torch.tensor(labels)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
        saved.append(census.total_bytes)
    return losses, saved


def test_minilm_fine_tune_patched_equals_unpatched() -> None:
    model, tokenizer, train = _sources()
    model.set_attn_implementation("eager")  # the arithmetic packed attention reproduces
    patched = copy.deepcopy(model)
    result = patch_model(patched)
    assert result.replaced["attention"] == 6 and result.replaced["dropout"] > 0
    losses, saved = _fine_tune(model, tokenizer, train)
    losses_p, saved_p = _fine_tune(patched, tokenizer, train)
    assert all(torch.equal(a, b) for a, b in zip(losses, losses_p, strict=True)), (losses, losses_p)
    for (name, a), b in zip(model.named_parameters(), patched.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert all(p < u for p, u in zip(saved_p, saved, strict=True))
