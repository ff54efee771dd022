"""Statistics over seeds and steps: summaries, Welch's t-test, exact curve equality, cosine.

Example:
    >>> summarize([0.81, 0.79, 0.80])["mean"]
    0.8
    >>> welch([1.0, 1.1, 0.9], [1.0, 1.2, 1.1]).p_value   # two-sided
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["Welch", "cosine", "curves_equal", "max_abs_diff", "relative_delta", "summarize", "welch"]


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """n, mean, std (sample, ddof=1; 0 for one value), median, p5, p95, min, max of `values`."""
    if len(values) == 0:
        raise ValueError("summarize needs at least one value.")
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median": float(np.median(a)),
        "p5": float(np.percentile(a, 5)),
        "p95": float(np.percentile(a, 95)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


@dataclass(frozen=True)
class Welch:
    """Two-sample Welch t-test of mean(b) vs mean(a): statistic, two-sided p-value, significance.

    ``identical`` is set when both samples are constant and equal (no variance, no difference):
    scipy returns NaN there; we report p = 1 (no evidence of a difference).
    """

    statistic: float
    p_value: float
    significant: bool
    identical: bool = False

    def as_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def welch(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> Welch:
    """Welch's unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False)."""
    from scipy.stats import ttest_ind

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values per sample, got {x.size} and {y.size}.")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        same = bool(x[0] == y[0])
        return Welch(0.0 if same else math.inf, 1.0 if same else 0.0, not same, identical=same)
    result = ttest_ind(y, x, equal_var=False)
    p = float(result.pvalue)
    return Welch(float(result.statistic), p, p < alpha)


def relative_delta(value: float, reference: float) -> float:
    """(value - reference) / reference, the study's quality delta."""
    return (value - reference) / reference


def curves_equal(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when two loss curves have the same length and bit-identical values."""
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


def max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest |a_i - b_i| over the common length (inf if lengths differ)."""
    if len(a) != len(b):
        return math.inf
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flat tensors, accumulated in float64."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    denom = a64.norm() * b64.norm()
    return float(a64 @ b64 / denom) if denom > 0 else math.nan
