"""exp-1: fine-tune a real model on real sentences once per variation and seed, and measure.

Per run: the loss at every step, step times (median after warm-up) and throughput, the final
validation accuracy and F1, the cosine similarity of the first step's gradient with the
baseline's (same seed, same batch), and, after training, one tracked step: peak memory, bytes
saved for backward, stored mask bytes, and the saved bytes dropout adds.

Every variation of a seed starts from the same weights, sees the same batches in the same order
and draws dropout from the same seed; the baseline runs first, the others in an order rotated
per seed. Speed is also measured apart, interleaved: `timing_rounds` rounds, each switching the
model through every variation (rotated order) for one warm-up and `timing_steps` timed steps,
so a change in the machine's load hits every variation alike.

Example:
    >>> result = run_exp1(Exp1Settings.quick())
    >>> result["runs"][0]["variation"], result["runs"][0]["val"]["accuracy"]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.memory import saved_bytes

from .machine import machine_info
from .probes import dropout_saved_bytes, step_memory, timed_step
from .stats import cosine
from .training import evaluate, flat_grad, load_data, load_model, reset_head
from .variations import BOOL_REFERENCE, Variation, applied, parse_variations

__all__ = ["Exp1Settings", "run_exp1"]

DEFAULT_VARIATIONS = ("packed-1bit-lazy", "packed-1bit-cached", "packed-2bit", "packed-4bit", "seeded-0bit")


@dataclass
class Exp1Settings:
    """What exp-1 runs. `quick()` takes minutes on 2 CPU cores; `full()` is the study-sized run."""

    model: str = "all-MiniLM-L6-v2"
    dataset: str = "rotten-tomatoes-vader"
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 300
    warmup: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    train_limit: int | None = None
    val_limit: int | None = None
    lr: float = 5e-5
    eval_batch: int = 128
    timing_rounds: int = 5
    timing_steps: int = 5
    variations: tuple[str, ...] = DEFAULT_VARIATIONS
    baseline_attn: str = "eager"
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def quick(cls, **overrides: Any) -> Exp1Settings:
        base = dict(seq_len=64, batch_size=16, steps=10, warmup=2, seeds=(0, 1), train_limit=16 * 10,
                    val_limit=256, lr=2e-4, timing_rounds=3, timing_steps=3)
        return cls(**(base | overrides))

    @classmethod
    def full(cls, **overrides: Any) -> Exp1Settings:
        return cls(**overrides)


def _first_step_grad(model: torch.nn.Module, box: dict[str, torch.Tensor]) -> None:
    box["grad"] = flat_grad(model)


def _one_run(
    s: Exp1Settings, model: torch.nn.Module, base_state: dict[str, torch.Tensor], train: Any, val: Any,
    variation: Variation, seed: int, baseline_grad: torch.Tensor | None, bar: tqdm,
) -> tuple[dict[str, Any], torch.Tensor]:
    model.load_state_dict(base_state)
    reset_head(model, seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    losses, times, box = [], [], {}
    with applied(model, variation) as patched:
        torch.manual_seed(seed)  # the dropout stream
        for step in range(s.steps):
            index = order[torch.arange(step * s.batch_size, (step + 1) * s.batch_size) % len(train)]
            batch = train.batch(index, s.device)
            hook = (lambda: _first_step_grad(model, box)) if step == 0 else None
            loss, seconds = timed_step(model, optimizer, batch, s.device, on_grad=hook)
            losses.append(loss)
            times.append(seconds)
            bar.update(1)
        scores = evaluate(model, val, s.eval_batch, s.device)
        memory = step_memory(model, optimizer, batch, s.device)
        dropout_bytes = dropout_saved_bytes(model, batch)
        bar.update(1)
    grad = box["grad"]
    timed = times[s.warmup:] or times
    run = {
        "variation": variation.name,
        "seed": seed,
        "patched": patched,
        "losses": losses,
        "step_times_s": times,
        "median_step_s": median(timed),
        "throughput_samples_s": s.batch_size / median(timed),
        "val": scores,
        "memory": memory.as_dict(),
        "dropout_saved_bytes": dropout_bytes,
        "grad_cosine": 1.0 if baseline_grad is None else cosine(grad, baseline_grad),
        "grad_identical": baseline_grad is None or torch.equal(grad, baseline_grad),
    }
    return run, grad


def _interleaved_times(
    s: Exp1Settings, model: torch.nn.Module, base_state: dict[str, torch.Tensor], train: Any,
    variations: list[Variation], bar: tqdm,
) -> dict[str, list[float]]:
    """Step seconds per variation, measured round-robin on one model and one batch."""
    model.load_state_dict(base_state)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr)
    batch = train.batch(range(s.batch_size), s.device)
    times: dict[str, list[float]] = {v.name: [] for v in variations}
    torch.manual_seed(0)
    for r in range(s.timing_rounds):
        shift = r % len(variations)
        for variation in variations[shift:] + variations[:shift]:
            bar.set_postfix_str(f"timing round {r + 1} {variation.name}")
            with applied(model, variation):
                timed_step(model, optimizer, batch, s.device)  # first step after switching: not timed
                for _ in range(s.timing_steps):
                    times[variation.name].append(timed_step(model, optimizer, batch, s.device)[1])
                    bar.update(1)
    return times


def _mask_elements(s: Exp1Settings, model: torch.nn.Module, train: Any) -> int:
    """Mask elements per step: the bytes of every mask stored at 8 bits (one byte each)."""
    batch = train.batch(range(s.batch_size), s.device)
    with applied(model, BOOL_REFERENCE):
        _, census = saved_bytes(lambda: model(**batch).loss)
    # Masks are PackedBools, or plain packed uint8 rows (the attention core's dropout bits): as
    # `probes.step_memory` counts mask_bytes.
    return census.packed_bytes + census.bytes_by_dtype.get(torch.uint8, 0)


def run_exp1(s: Exp1Settings, *, progress: bool = True) -> dict[str, Any]:
    """Run every variation x seed, then the interleaved timing; return settings, machine, mask
    element count, the runs and the interleaved step times."""
    variations = parse_variations(list(s.variations))
    steps = len(variations) * (len(s.seeds) * (s.steps + 1) + s.timing_rounds * s.timing_steps)
    bar = tqdm(total=steps, desc="exp-1", unit="step", disable=not progress)
    bar.set_postfix_str("loading model and data")
    model, tokenizer = load_model(s.model)
    model.set_attn_implementation(s.baseline_attn)
    model.to(s.device)
    train, val = load_data(tokenizer, s.dataset, seq_len=s.seq_len, train_limit=s.train_limit, val_limit=s.val_limit)
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runs = []
    for i, seed in enumerate(s.seeds):
        others = variations[1:]
        shift = i % len(others) if others else 0
        baseline_grad = None
        for variation in [variations[0], *others[shift:], *others[:shift]]:
            bar.set_postfix_str(f"seed {seed} {variation.name}")
            run, grad = _one_run(s, model, base_state, train, val, variation, seed, baseline_grad, bar)
            baseline_grad = grad if variation.is_baseline else baseline_grad
            runs.append(run)
    timing = _interleaved_times(s, model, base_state, train, variations, bar)
    bar.set_postfix_str("mask census")
    elements = _mask_elements(s, model, train)
    bar.close()
    return {
        "experiment": "exp-1",
        "settings": asdict(s),
        "machine": machine_info(s.device),
        "train_size": len(train),
        "val_size": len(val),
        "mask_elements_per_step": elements,
        "runs": runs,
        "interleaved_step_s": timing,
    }
