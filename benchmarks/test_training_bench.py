"""A whole training step (forward, backward, AdamW) of a small BERT, native vs every mask packed.

`benchmarks.kit.tiny_bert`: TinyBERT's shape, random weights, seq 128, batch 32 (batch 4 under
``--benchmark-disable``, where the suite runs once as a test). "native" is the stock transformers
model; "packed-1bit-lazy" is the same model after ``integrations.huggingface.patch_model`` (dropout and attention-probability masks at 1 bit).

``extra_info``: ``peak_bytes`` (one tracked step, optimizer state present), ``saved_bytes``
(saved for backward in the forward), ``mask_bytes`` (stored packed masks), ``batch``, ``seq_len``.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.kit.probes import step_memory, timed_step
from benchmarks.kit.tiny_bert import BATCH, BATCH_WHEN_DISABLED, DEVICE, SEQ_LEN, tiny_bert
from benchmarks.kit.training import random_batch, train_step


@pytest.mark.parametrize("variant", ["native", "packed-1bit-lazy"])
def test_training_step(benchmark, variant: str) -> None:
    pytest.importorskip("transformers")
    batch_size = BATCH if benchmark.enabled else BATCH_WHEN_DISABLED
    model = tiny_bert()
    if variant != "native":
        from integrations.huggingface import patch_model

        report = patch_model(model, bits=1, unpack="lazy")
        assert report.replaced["dropout"] > 0 and report.replaced["attention"] > 0, str(report)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = random_batch(model.config.vocab_size, batch_size, SEQ_LEN, device=DEVICE)
    train_step(model, optimizer, batch)  # creates the optimizer state: later steps are steady-state
    memory = step_memory(model, optimizer, batch, DEVICE)

    benchmark.group = f"training step: TinyBERT-4L-312H b{batch_size} s{SEQ_LEN} {DEVICE}"
    benchmark.extra_info.update(
        variant=variant,
        batch=batch_size,
        seq_len=SEQ_LEN,
        attn_implementation=model.config._attn_implementation,
        peak_bytes=memory.peak_bytes,
        saved_bytes=memory.saved_bytes,
        mask_bytes=memory.mask_bytes,
    )
    loss = benchmark.pedantic(
        lambda: timed_step(model, optimizer, batch, DEVICE)[0], rounds=3, warmup_rounds=1
    )
    assert torch.isfinite(torch.tensor(loss))
    if variant != "native":
        assert memory.mask_bytes > 0
