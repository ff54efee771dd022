"""The records of the study's runs, and their one JSON form.

A record is stored on disk (`resume.RunStore`), in results.json and in the CSV files as the plain
JSON of its `as_dict`; code that reads one decodes it once with `from_dict` and reads its
attributes. exp-1 stores one `Exp1Run` per training run; exp-2's result is one `Exp2Result`
(sweep points, budget searches, showcases and the system comparison).

Example:
    >>> run = Exp1Run.from_dict(result["tasks"]["text"]["runs"][0])
    >>> run.variation, run.test["accuracy"], run.memory.peak_bytes
    >>> exp2 = Exp2Result.from_dict(result)
    >>> exp2.search["batch"]["baseline"].best, exp2.points[0].memory.saved_bytes
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.kit.probes import StepMemory

from .budget import Search

__all__ = ["BudgetShowcase", "Exp1Run", "Exp2Result", "SweepPoint", "SystemComparison", "SystemMeasurement"]


class Record:
    """A record's one JSON form: `as_dict` (plain JSON) and its inverse `from_dict`. Records holding
    other records override `from_dict` to decode those."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**data)


def _memory(data: dict[str, int] | None) -> StepMemory | None:
    return None if data is None else StepMemory(**data)


@dataclass(frozen=True)
class Exp1Run(Record):
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exp1Run:
        """The inverse of `as_dict` (a run read back from disk or a results file)."""
        return cls(**data | {"memory": StepMemory(**data["memory"])})


@dataclass(frozen=True)
class SweepPoint(Record):
    """One tracked training step of an exp-2 sweep (`sweep` "seq" or "batch"); `memory` is None
    when the device ran out of memory."""

    sweep: str
    variation: str
    batch: int
    seq_len: int
    memory: StepMemory | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPoint:
        return cls(**data | {"memory": _memory(data["memory"])})


@dataclass(frozen=True)
class BudgetShowcase(Record):
    """A configuration the packed `variation` fits under `budget_bytes` and the baseline does not.

    Attributes:
        kind: which search found it, "batch" or "seq".
        baseline_peak_bytes: None when not measured (the baseline was already over budget at the
            smaller size `baseline_over_budget_at`) or out of memory.
        baseline_fits: whether the baseline's step at this configuration fits the budget after all.
    """

    kind: str
    batch: int
    seq_len: int
    variation: str
    budget_bytes: int
    baseline_peak_bytes: int | None
    baseline_over_budget_at: int | None
    packed_peak_bytes: int | None
    baseline_fits: bool


@dataclass(frozen=True)
class SystemMeasurement(Record):
    """One `benchmarks.kit.toolbox` variant in exp-2's system comparison (`toolbox.interleaved`'s row).

    Attributes:
        median_s, step_s: median and every round's step seconds.
        time_ratio: median over rounds of its step time / the first variant's.
        retained_bytes: bytes the forward made that are alive after it.
        peak_bytes: peak of one tracked training step.
        loss: the last step's loss.
    """

    variant: str
    median_s: float
    time_ratio: float
    retained_bytes: int
    peak_bytes: int
    step_s: list[float]
    loss: float


@dataclass(frozen=True)
class SystemComparison(Record):
    """Every system variant measured (`rows`, the first is the reference), and the largest batch each
    fits under `budget_bytes` (`search`; the `not_searched` variants have none)."""

    rows: list[SystemMeasurement]
    budget_bytes: int
    search: dict[str, Search]
    not_searched: list[str]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SystemComparison:
        return cls(
            rows=[SystemMeasurement.from_dict(r) for r in data["rows"]],
            budget_bytes=data["budget_bytes"],
            search={name: Search.from_dict(s) for name, s in data["search"].items()},
            not_searched=data["not_searched"],
        )


@dataclass(frozen=True)
class Exp2Result(Record):
    """Everything one exp-2 run measured (`exp2.run_exp2`).

    Attributes:
        settings: `Exp2Settings` as a dict; machine: `machine.machine_info`.
        model_config: the measured model's sizes; parameters: its parameter count.
        points: both sweeps, every variation.
        search: kind ("batch" or "seq") -> variation -> its budget search.
        showcase: configurations a packed variation fits and the baseline does not.
        systems: the system comparison, None when no system was run.
    """

    settings: dict[str, Any]
    machine: dict[str, Any]
    model_config: dict[str, int]
    parameters: int
    points: list[SweepPoint]
    search: dict[str, dict[str, Search]]
    showcase: list[BudgetShowcase]
    systems: SystemComparison | None
    experiment: str = "exp-2"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exp2Result:
        """The inverse of `as_dict` (a result read back from results.json)."""
        return cls(
            **data
            | {
                "points": [SweepPoint.from_dict(p) for p in data["points"]],
                "search": {
                    kind: {name: Search.from_dict(s) for name, s in by_name.items()}
                    for kind, by_name in data["search"].items()
                },
                "showcase": [BudgetShowcase.from_dict(c) for c in data["showcase"]],
                "systems": SystemComparison.from_dict(data["systems"]) if data["systems"] else None,
            }
        )
