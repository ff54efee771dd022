"""The record of one exp-1 training run, and its one JSON form.

A run is stored on disk (`resume.RunStore`), in results.json and in the CSV files as the plain
JSON of `Exp1Run.as_dict`; code that reads a run decodes it once with `Exp1Run.from_dict` and reads
its attributes.

Example:
    >>> run = Exp1Run.from_dict(result["tasks"]["text"]["runs"][0])
    >>> run.variation, run.test["accuracy"], run.memory.peak_bytes
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.kit.probes import StepMemory

__all__ = ["Exp1Run"]


@dataclass(frozen=True)
class Exp1Run:
    """One variation trained from one seed's start (`exp1`).

    Attributes:
        patched: what `patch_model` replaced, per kind (empty for the baseline).
        losses, step_times_s: per training step.
        median_step_s, throughput_samples_s: over the steps after the warm-up.
        val_curve: ``[step, validation accuracy]`` at each validation point.
        val, test: the final model's metrics (``accuracy``; test also ``f1``).
        memory: one tracked step after training.
        dropout_saved_bytes: what dropout adds to the saved bytes (`probes.dropout_saved_bytes`).
        grad_cosine, grad_identical: the first step's gradient against the baseline's of the same seed.
    """

    variation: str
    seed: int
    patched: dict[str, int]
    losses: list[float]
    step_times_s: list[float]
    median_step_s: float
    throughput_samples_s: float
    val_curve: list[list[float]]
    val: dict[str, float]
    test: dict[str, float]
    memory: StepMemory
    dropout_saved_bytes: int
    grad_cosine: float
    grad_identical: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exp1Run:
        """The inverse of `as_dict` (a run read back from disk or a results file)."""
        return cls(**data | {"memory": StepMemory(**data["memory"])})
