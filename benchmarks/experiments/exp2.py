"""exp-2: how memory scales with sequence length and batch, and what fits under a memory budget.

The model has the real default's architecture (all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads),
randomly initialised with its position table extended to the longest sequence, fed uniformly drawn
token ids without padding: memory depends on the shapes only. Every point is one tracked training
step (peak memory and saved bytes) after the optimizer state exists.

- seq sweep: batch `seq_batch`, each length in `seq_lens`; batch sweep: length `batch_seq`.
- budget: the largest batch (at `search_seq`) and the largest length (multiples of `seq_step`, at
  `search_batch`) whose step peaks under `budget_mb`, per variation; then a configuration that
  fits packed but not baseline, both measured.
- systems: what a user short of memory would otherwise pick, on the real pretrained model
  (`benchmarks.kit.toolbox` variants: gradient checkpointing, torch.compile, bf16 autocast, each alone
  and with packing, packing alone, stock): peak bytes, bytes retained after the forward (a
  saved-tensor census cannot see inside checkpoints or compiled graphs) and step time, timed in
  interleaved rounds; then the largest batch each fits under `system_budget_mb`. The compiled
  variants are left out of that search: torch.compile specialises on shapes, so every probed
  batch would recompile (minutes each on 2 CPU cores), and ``dynamic=True`` compiles other code.

Every variation's sweeps and searches, the systems timing and each system's search are stored
as their own JSON file when a `RunStore` is given: a restarted run redoes only what is missing.

The result is the JSON form of a `records.Exp2Result` (what results.json holds); read it with
`Exp2Result.from_dict`.

Example:
    >>> result = Exp2Result.from_dict(run_exp2(Exp2Settings.quick()))
    >>> result.search["batch"]["baseline"].best, result.search["batch"]["packed-1bit-lazy"].best
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.kit.probes import StepMemory, step_memory
from benchmarks.kit.training import model_from_config, random_batch, train_step

from .budget import Search, largest_fitting
from .machine import machine_info
from .records import BudgetShowcase, Exp2Result, SweepPoint, SystemComparison, SystemMeasurement
from .resume import RunStore
from .variations import BASELINE, Variation, applied, parse_variations

__all__ = ["Exp2Settings", "run_exp2"]

MIB = 2**20
SEARCH_STEPS_GUESS = 6  # a budget search usually measures 4 to 8 steps (progress bar estimate)


@dataclass
class Exp2Settings:
    """What exp-2 measures; the defaults are `standard()` (= `full()`), about 15 min on 2 CPU cores.
    `quick()` takes a few minutes (its systems: stock, packing, checkpointing, AMP; no compile)."""

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
    baseline_attn: str = "sdpa"
    systems: tuple[str, ...] = (
        "native",
        "patch",
        "checkpointing",
        "checkpointing+patch",
        "compile",
        "compile+patch",
        "amp",
        "amp+patch",
    )
    system_batch: int = 16
    system_seq: int = 128
    system_rounds: int = 5
    system_budget_mb: float = 768.0
    system_max_batch: int = 256
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def quick(cls, **overrides: Any) -> Exp2Settings:
        base = dict(
            seq_lens=(128, 256, 512),
            seq_batch=2,
            batch_sizes=(2, 4, 8),
            batch_seq=64,
            budget_mb=480.0,
            search_seq=64,
            search_batch=2,
            seq_step=32,
            max_batch=64,
            max_seq=512,
            baseline_attn="eager",
            systems=("native", "patch", "checkpointing+patch", "amp", "amp+patch"),
            system_batch=4,
            system_seq=64,
            system_rounds=3,
            system_budget_mb=480.0,
            system_max_batch=64,
        )
        return cls(**(base | overrides))

    @classmethod
    def standard(cls, **overrides: Any) -> Exp2Settings:
        return cls(**overrides)

    @classmethod
    def full(cls, **overrides: Any) -> Exp2Settings:
        return cls(**overrides)


class _Bench:
    """The model, its optimizer (state already created) and a counter of measured steps."""

    def __init__(self, s: Exp2Settings, bar: tqdm) -> None:
        self.s, self.bar = s, bar
        self.variation = "baseline"
        self._measured: dict[tuple[str, int, int], StepMemory | None] = {}
        torch.manual_seed(0)
        self.model = model_from_config(s.model, max_positions=max(*s.seq_lens, s.max_seq))
        self.model.set_attn_implementation(s.baseline_attn)
        self.model.to(s.device).train()
        # lr 0: the weights stay as initialised, the optimizer state is still created and kept.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.0)
        train_step(self.model, self.optimizer, self._batch(1, 8))

    def _batch(self, batch: int, seq_len: int) -> dict[str, torch.Tensor]:
        return random_batch(self.model.config.vocab_size, batch, seq_len, device=self.s.device)

    def measure(self, batch: int, seq_len: int) -> StepMemory | None:
        """The memory of one step, or None when the device ran out of memory (measured
        once per variation and shape: memory does not depend on the data)."""
        key = (self.variation, batch, seq_len)
        if key not in self._measured:
            self._measured[key] = self._measure(batch, seq_len)
        return self._measured[key]

    def _measure(self, batch: int, seq_len: int) -> StepMemory | None:
        self.bar.set_postfix_str(f"{self.variation} batch {batch} seq {seq_len}")
        try:
            memory = step_memory(self.model, self.optimizer, self._batch(batch, seq_len), self.s.device)
        except torch.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            memory = None
        self.bar.update(1)
        return memory


def _peak(memory: StepMemory | None) -> int | None:
    return None if memory is None else memory.peak_bytes


def _sweeps(bench: _Bench, variation: Variation) -> list[SweepPoint]:
    s, points = bench.s, []
    for sweep, batch_seq in (
        ("seq", [(s.seq_batch, n) for n in s.seq_lens]),
        ("batch", [(b, s.batch_seq) for b in s.batch_sizes]),
    ):
        for batch, seq_len in batch_seq:
            points.append(SweepPoint(sweep, variation.name, batch, seq_len, bench.measure(batch, seq_len)))
    return points


def _searches(bench: _Bench, budget: int) -> dict[str, Search]:
    s = bench.s
    by_batch = largest_fitting(lambda b: _peak(bench.measure(b, s.search_seq)), budget, 1, s.max_batch)
    by_seq = largest_fitting(
        lambda k: _peak(bench.measure(s.search_batch, k * s.seq_step)), budget, 1, s.max_seq // s.seq_step
    )
    return {"batch": by_batch, "seq": by_seq}


def _showcase(
    bench: _Bench, searches: dict[str, dict[str, Search]], packed: str, budget: int
) -> list[BudgetShowcase]:
    """Configurations the packed variation fits and the baseline does not, both peaks measured."""
    s, cases = bench.s, []
    for kind, results in searches.items():
        base, pack = results["baseline"], results[packed]
        if pack.best is None or (base.best is not None and pack.best <= base.best):
            continue
        batch, seq_len = (
            (pack.best, s.search_seq) if kind == "batch" else (s.search_batch, pack.best * s.seq_step)
        )
        size = pack.best
        base_peak = base.peak_at(size)
        # Memory grows with the size: a smaller size over budget already shows the baseline does not fit.
        # Measuring it at `size` anyway can exhaust a CPU machine's RAM (the OOM killer ends the run).
        over = min(
            (p for p in base.probes if not p.fits and p.size <= size), key=lambda p: p.size, default=None
        )
        if base_peak is None and over is None:
            bench.variation = BASELINE  # the model is unpatched here
            base_peak = _peak(bench.measure(batch, seq_len))
        cases.append(
            BudgetShowcase(
                kind=kind,
                batch=batch,
                seq_len=seq_len,
                variation=packed,
                budget_bytes=budget,
                baseline_peak_bytes=base_peak,
                baseline_over_budget_at=None if over is None else over.size,
                packed_peak_bytes=pack.peak_at(size),
                baseline_fits=over is None and base_peak is not None and base_peak <= budget,
            )
        )
    return cases


def _system_search(s: Exp2Settings, name: str, budget: int) -> Search:
    """Largest batch at `system_seq` whose tracked step of toolbox variant `name` fits `budget`."""
    from benchmarks.kit.toolbox import build

    model = build(name, s.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # weights fixed, optimizer state real
    train_step(model, optimizer, random_batch(model.config.vocab_size, 1, 8, device=s.device))

    def peak_of(batch: int) -> int | None:
        try:
            data = random_batch(model.config.vocab_size, batch, s.system_seq, device=s.device)
            return step_memory(model, optimizer, data, s.device).peak_bytes
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            return None

    return largest_fitting(peak_of, budget, 1, s.system_max_batch)


def _systems(s: Exp2Settings, store: RunStore, progress: bool) -> SystemComparison:
    """Interleaved timing and memory of every toolbox variant in `s.systems`, then its budget search."""
    from benchmarks.kit.toolbox import interleaved

    config = {k: getattr(s, k) for k in ("systems", "system_batch", "system_seq", "system_rounds", "device")}
    rows = store.get(
        "exp-2/systems/interleaved",
        config,
        lambda: interleaved(
            list(s.systems), s.system_batch, s.system_seq, s.system_rounds, device=s.device, progress=progress
        ),
    )
    budget = int(s.system_budget_mb * MIB)
    searches = {}
    for name in tqdm(
        [n for n in s.systems if "compile" not in n], desc="exp-2 systems budget", disable=not progress
    ):
        search_config = {
            "variant": name,
            "seq": s.system_seq,
            "budget_mb": s.system_budget_mb,
            "max_batch": s.system_max_batch,
            "device": s.device,
        }
        searches[name] = Search.from_dict(
            store.get(
                f"exp-2/systems/budget-{name}",
                search_config,
                lambda n=name: _system_search(s, n, budget).as_dict(),
            )
        )
    return SystemComparison(
        rows=[SystemMeasurement.from_dict(r) for r in rows],
        budget_bytes=budget,
        search=searches,
        not_searched=[n for n in s.systems if "compile" in n],
    )


def run_exp2(s: Exp2Settings, *, progress: bool = True, store: RunStore | None = None) -> dict[str, Any]:
    """Sweeps, budget searches and showcases for the baseline and each packed variation, then the
    system comparison, as the JSON form of an `Exp2Result`; parts found in `store` with the same
    settings are read instead of run."""
    store = store or RunStore(None)
    variations = parse_variations(list(s.variations))
    budget = int(s.budget_mb * MIB)
    per_variation = len(s.seq_lens) + len(s.batch_sizes) + 2 * SEARCH_STEPS_GUESS
    bar = tqdm(total=len(variations) * per_variation, desc="exp-2", unit="step", disable=not progress)
    bench = _Bench(s, bar)
    config = {k: v for k, v in asdict(s).items() if k != "variations" and not k.startswith("system")}
    points: list[SweepPoint] = []
    searches: dict[str, dict[str, Search]] = {"batch": {}, "seq": {}}
    for variation in variations:

        def measure(v: Variation = variation) -> dict[str, Any]:
            with applied(bench.model, v):
                bench.variation = v.name
                return {
                    "points": [p.as_dict() for p in _sweeps(bench, v)],
                    "search": {kind: r.as_dict() for kind, r in _searches(bench, budget).items()},
                }

        part = store.get(f"exp-2/scaling/{variation.name}", config, measure)
        points += map(SweepPoint.from_dict, part["points"])
        for kind, search in part["search"].items():
            searches[kind][variation.name] = Search.from_dict(search)
    showcase = []
    for variation in variations[1:]:
        showcase += _showcase(bench, searches, variation.name, budget)
    bar.total = bar.n  # the searches' step count is only known once they end
    bar.close()
    return Exp2Result(
        settings=asdict(s),
        machine=machine_info(s.device),
        model_config={
            k: getattr(bench.model.config, k)
            for k in (
                "num_hidden_layers",
                "hidden_size",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
            )
        },
        parameters=sum(p.numel() for p in bench.model.parameters()),
        points=points,
        search=searches,
        showcase=showcase,
        systems=_systems(s, store, progress) if s.systems else None,
    ).as_dict()
