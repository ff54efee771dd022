"""exp-2: how memory scales with sequence length and batch, and what fits under a memory budget.

The model has the real default's architecture (all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads),
randomly initialised with its position table extended to the longest sequence, fed uniformly drawn
token ids without padding: memory depends on the shapes only. Every point is one tracked training
step (peak memory and saved bytes) after the optimizer state exists.

- seq sweep: batch `seq_batch`, each length in `seq_lens`; batch sweep: length `batch_seq`.
- budget: the largest batch (at `search_seq`) and the largest length (multiples of `seq_step`, at
  `search_batch`) whose step peaks under `budget_mb`, per variation; then a configuration that
  fits packed but not baseline, both measured.

Example:
    >>> result = run_exp2(Exp2Settings.quick())
    >>> result["search"]["batch"]["baseline"]["best"], result["search"]["batch"]["packed-1bit-lazy"]["best"]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .budget import largest_fitting
from .machine import machine_info
from .probes import step_memory
from .training import model_from_config, random_batch, train_step
from .variations import BASELINE, Variation, applied, parse_variations

__all__ = ["Exp2Settings", "run_exp2"]

MIB = 2**20
SEARCH_STEPS_GUESS = 6  # a budget search usually measures 4 to 8 steps (progress bar estimate)


@dataclass
class Exp2Settings:
    """What exp-2 measures. `quick()` takes a couple of minutes on 2 CPU cores."""

    model: str = "all-MiniLM-L6-v2"
    seq_lens: tuple[int, ...] = (128, 256, 512, 1024)
    seq_batch: int = 4
    batch_sizes: tuple[int, ...] = (8, 16, 32, 64)
    batch_seq: int = 128
    budget_mb: float = 2048.0
    search_seq: int = 128
    search_batch: int = 4
    seq_step: int = 64
    max_batch: int = 512
    max_seq: int = 4096
    variations: tuple[str, ...] = ("packed-1bit-lazy",)
    baseline_attn: str = "eager"
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def quick(cls, **overrides: Any) -> Exp2Settings:
        base = dict(seq_lens=(128, 256, 512), seq_batch=2, batch_sizes=(2, 4, 8), batch_seq=64, budget_mb=480.0,
                    search_seq=64, search_batch=2, seq_step=32, max_batch=64, max_seq=512)
        return cls(**(base | overrides))

    @classmethod
    def full(cls, **overrides: Any) -> Exp2Settings:
        return cls(**overrides)


class _Bench:
    """The model, its optimizer (state already created) and a counter of measured steps."""

    def __init__(self, s: Exp2Settings, bar: tqdm) -> None:
        self.s, self.bar = s, bar
        self.variation = "baseline"
        self._measured: dict[tuple[str, int, int], dict[str, int] | None] = {}
        torch.manual_seed(0)
        self.model = model_from_config(s.model, max_positions=max(*s.seq_lens, s.max_seq))
        self.model.set_attn_implementation(s.baseline_attn)
        self.model.to(s.device).train()
        # lr 0: the weights stay as initialised, the optimizer state is still created and kept.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.0)
        train_step(self.model, self.optimizer, self._batch(1, 8))

    def _batch(self, batch: int, seq_len: int) -> dict[str, torch.Tensor]:
        return random_batch(self.model.config.vocab_size, batch, seq_len, device=self.s.device)

    def measure(self, batch: int, seq_len: int) -> dict[str, int] | None:
        """StepMemory fields of one step, or None when the device ran out of memory (measured
        once per variation and shape: memory does not depend on the data)."""
        key = (self.variation, batch, seq_len)
        if key not in self._measured:
            self._measured[key] = self._measure(batch, seq_len)
        return self._measured[key]

    def _measure(self, batch: int, seq_len: int) -> dict[str, int] | None:
        self.bar.set_postfix_str(f"{self.variation} batch {batch} seq {seq_len}")
        try:
            memory = step_memory(self.model, self.optimizer, self._batch(batch, seq_len), self.s.device).as_dict()
        except torch.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            memory = None
        self.bar.update(1)
        return memory


def _peak(memory: dict[str, int] | None) -> int | None:
    return None if memory is None else memory["peak_bytes"]


def _sweeps(bench: _Bench, variation: Variation) -> list[dict[str, Any]]:
    s, points = bench.s, []
    for sweep, batch_seq in (("seq", [(s.seq_batch, n) for n in s.seq_lens]),
                             ("batch", [(b, s.batch_seq) for b in s.batch_sizes])):
        for batch, seq_len in batch_seq:
            memory = bench.measure(batch, seq_len)
            points.append({"sweep": sweep, "variation": variation.name, "batch": batch, "seq_len": seq_len,
                           "memory": memory})
    return points


def _searches(bench: _Bench, budget: int) -> dict[str, Any]:
    s = bench.s
    by_batch = largest_fitting(lambda b: _peak(bench.measure(b, s.search_seq)), budget, 1, s.max_batch)
    by_seq = largest_fitting(
        lambda k: _peak(bench.measure(s.search_batch, k * s.seq_step)), budget, 1, s.max_seq // s.seq_step
    )
    return {"batch": by_batch, "seq": by_seq}


def _showcase(bench: _Bench, searches: dict[str, dict[str, Any]], packed: str, budget: int) -> list[dict[str, Any]]:
    """Configurations the packed variation fits and the baseline does not, both peaks measured."""
    s, cases = bench.s, []
    for kind, results in searches.items():
        base, pack = results["baseline"], results[packed]
        if pack.best is None or (base.best is not None and pack.best <= base.best):
            continue
        batch, seq_len = (pack.best, s.search_seq) if kind == "batch" else (s.search_batch, pack.best * s.seq_step)
        size = pack.best
        base_peak = base.peak_at(size)
        if base_peak is None:
            bench.variation = BASELINE  # the model is unpatched here
            base_peak = _peak(bench.measure(batch, seq_len))
        cases.append({"kind": kind, "batch": batch, "seq_len": seq_len, "variation": packed,
                      "budget_bytes": budget, "baseline_peak_bytes": base_peak,
                      "packed_peak_bytes": pack.peak_at(size),
                      "baseline_fits": base_peak is not None and base_peak <= budget})
    return cases


def run_exp2(s: Exp2Settings, *, progress: bool = True) -> dict[str, Any]:
    """Sweeps, budget searches and showcases for the baseline and each packed variation."""
    variations = parse_variations(list(s.variations))
    budget = int(s.budget_mb * MIB)
    per_variation = len(s.seq_lens) + len(s.batch_sizes) + 2 * SEARCH_STEPS_GUESS
    bar = tqdm(total=len(variations) * per_variation, desc="exp-2", unit="step", disable=not progress)
    bench = _Bench(s, bar)
    points, searches = [], {"batch": {}, "seq": {}}
    for variation in variations:
        with applied(bench.model, variation):
            bench.variation = variation.name
            points += _sweeps(bench, variation)
            for kind, search in _searches(bench, budget).items():
                searches[kind][variation.name] = search
    showcase = []
    for variation in variations[1:]:
        showcase += _showcase(bench, searches, variation.name, budget)
    bar.total = bar.n  # the searches' step count is only known once they end
    bar.close()
    return {
        "experiment": "exp-2",
        "settings": asdict(s),
        "machine": machine_info(s.device),
        "model_config": {k: getattr(bench.model.config, k) for k in (
            "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")},
        "parameters": sum(p.numel() for p in bench.model.parameters()),
        "points": points,
        "search": {kind: {name: r.as_dict() for name, r in by_name.items()} for kind, by_name in searches.items()},
        "showcase": showcase,
    }
