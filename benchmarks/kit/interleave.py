"""Time several ways of doing one job round-robin in one process, and compare them as ratios.

A CPU shared with other work slows every variant alike within a round, so the median of per-round
ratios holds where separately timed medians drift (the machine this suite was tuned on has 2 cores).
Each round runs every step once, the order rotating by one each round, after `warmup` untimed rounds.

Example:
    >>> times = round_robin({"native": native_step, "packed": packed_step}, rounds=15)
    >>> median_ratio(times, "packed", "native")      # < 1: packed is faster
    0.97
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_ratio", "round_robin"]


def round_robin(
    steps: dict[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds of each step in each timed round (`sync` waits for queued device work after each)."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: at least one timed round is needed.")
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name]()
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], variant: str, base: str) -> float:
    """The median over rounds of variant's time / base's time in the same round."""
    return statistics.median(a / b for a, b in zip(times[variant], times[base], strict=True))
