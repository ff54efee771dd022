"""The largest size (batch, or sequence length in steps) whose training step fits a memory budget.

Memory grows with the size, close to affinely for the batch. `largest_fitting` measures real
steps only: it grows the size until one does not fit, then interpolates inside the bracket and
bisects when interpolation stalls. The answer is always backed by two measurements: the best
size fits and the next one does not (or it is the cap).

Example:
    >>> search = largest_fitting(lambda b: step_memory_at(batch=b).peak_bytes, 2 * 2**30, lo=1, hi=512)
    >>> search.best, [(p.size, p.peak_bytes) for p in search.probes]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from bittensor_core.errors import PackedBoolValueError

__all__ = ["Probe", "Search", "largest_fitting"]


@dataclass(frozen=True)
class Probe:
    """One measured size: its peak bytes (None: out of memory) and whether it fits the budget."""

    size: int
    peak_bytes: int | None
    fits: bool


@dataclass
class Search:
    """Result: `best` fitting size (None if even `lo` does not fit), every probe, capped at `hi`."""

    budget_bytes: int
    lo: int
    hi: int
    best: int | None = None
    capped: bool = False
    probes: list[Probe] = field(default_factory=list)

    def peak_at(self, size: int) -> int | None:
        return next((p.peak_bytes for p in self.probes if p.size == size), None)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Search:
        """The inverse of `as_dict` (a search read back from a results file)."""
        return cls(**(data | {"probes": [Probe(**p) for p in data["probes"]]}))


def _crossing(a: Probe, b: Probe, budget: int) -> int | None:
    """Largest size under the budget on the line through probes a and b (None if it does not rise)."""
    (a, b) = sorted((a, b), key=lambda p: p.size)
    if a.peak_bytes is None or b.peak_bytes is None or b.peak_bytes <= a.peak_bytes:
        return None
    slope = (b.peak_bytes - a.peak_bytes) / (b.size - a.size)
    return a.size + math.floor((budget - a.peak_bytes) / slope)


def largest_fitting(peak_of: Callable[[int], int | None], budget_bytes: int, lo: int, hi: int) -> Search:
    """Largest size n in [lo, hi] with ``peak_of(n) <= budget_bytes``, assuming peak grows with n.

    Args:
        peak_of: measures one size, returning its peak bytes, or None when it ran out of memory.
        budget_bytes: the memory budget.
        lo, hi: the sizes searched (hi is a cap: if it fits, the search says so with `capped`).
    """
    if not 1 <= lo <= hi:
        raise PackedBoolValueError(f"need 1 <= lo <= hi, got lo={lo}, hi={hi}.")
    search = Search(budget_bytes, lo, hi)
    seen: dict[int, Probe] = {}

    def fits(n: int) -> bool:
        if n not in seen:
            peak = peak_of(n)
            seen[n] = Probe(n, peak, peak is not None and peak <= budget_bytes)
            search.probes.append(seen[n])
        return seen[n].fits

    if not fits(lo):
        return search
    # Grow until a size does not fit: aim 10 % past the line through the last two probes, but never
    # more than 4x at once (a nearly flat start - memory held by the optimizer step - aims far).
    good, bad = lo, None
    while bad is None:
        estimate = _crossing(*search.probes[-2:], budget_bytes) if len(search.probes) > 1 else None
        aim = math.ceil(1.1 * estimate) + 1 if estimate else 2 * good
        n = min(hi, 4 * good, max(good + 1, aim))
        if fits(n):
            good = n
            if n == hi:
                search.best, search.capped = hi, True
                return search
        else:
            bad = n
    # Bracket [good, bad): aim with the line through the two smallest sizes that did not fit (both
    # on the rising part, where a flat start - memory held by the optimizer step - does not bend
    # the line), else through good and bad; check the neighbour; bisect if that gained little.
    while bad - good > 1:
        width = bad - good
        over = sorted(
            (p for p in search.probes if not p.fits and p.peak_bytes is not None), key=lambda p: p.size
        )
        line = over[:2] if len(over) > 1 else [seen[good], seen[bad]]
        guess = _crossing(*line, budget_bytes)
        n = min(bad - 1, max(good + 1, guess if guess is not None else (good + bad) // 2))
        if fits(n):
            good = n
            if n + 1 < bad:
                good, bad = (n + 1, bad) if fits(n + 1) else (good, n + 1)
        else:
            bad = n
            if n - 1 > good:
                good, bad = (n - 1, bad) if fits(n - 1) else (good, n - 1)
        if bad - good > max(1, width // 2):
            mid = (good + bad) // 2
            good, bad = (mid, bad) if fits(mid) else (good, mid)
    search.best = good
    return search
