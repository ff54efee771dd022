"""From raw runs to tables and to a PASS / FAIL / NOT RUN verdict per success criterion of the
study (the criteria and their figures: docs/study.md).

Example:
    >>> rows = exp1_rows(result["exp-1"]["tasks"]["text"])   # one row per variation, baseline first
    >>> seq_rows, batch_rows = exp2_rows(Exp2Result.from_dict(result["exp-2"]))
    >>> for c in criteria(result): print(c["criterion"], c["status"], c["command"])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Any

from benchmarks.kit.probes import StepMemory

from .records import BudgetShowcase, Exp1Run, Exp2Result
from .stats import curves_equal, max_abs_diff, relative_delta, summarize, welch
from .variations import BASELINE, VARIATIONS

__all__ = [
    "SweepRow",
    "baseline_peak",
    "criteria",
    "exp1_rows",
    "exp2_rows",
    "hypotheses",
    "pareto_front",
    "sigmas",
]

# The study's success criteria (docs/study.md, "Success criteria").
MIN_COMPRESSION = 7.5
MIN_SAVING_SMALL = 0.05
MIN_SAVING_LARGE = 0.10
MAX_THROUGHPUT_CHANGE = 0.02
MAX_METRIC_SIGMAS = 0.2
STUDY_GRAD_COSINE = 0.9994
MAIN = "packed-1bit-lazy"
FAST = "packed-1bit-fast"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _throughputs(task: dict[str, Any], name: str) -> list[float]:
    """Samples/s of every interleaved timing step of variation `name`."""
    return [task["batch_size"] / t for t in task["interleaved_step_s"][name]]


def exp1_rows(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variation of one exp-1 task (``result["exp-1"]["tasks"][name]``): memory, compression,
    speed, test accuracy / F1 and equality figures, vs the baseline."""
    exp1 = task
    runs_by: dict[str, list[Exp1Run]] = {}
    for run in map(Exp1Run.from_dict, exp1["runs"]):
        runs_by.setdefault(run.variation, []).append(run)
    base_runs = runs_by[BASELINE]
    base_by_seed = {r.seed: r for r in base_runs}
    base_tput = _throughputs(exp1, BASELINE)
    base_acc = [r.test["accuracy"] for r in base_runs]
    base_f1 = [r.test["f1"] for r in base_runs]
    base = {
        "peak": _mean([r.memory.peak_bytes for r in base_runs]),
        "saved": _mean([r.memory.saved_bytes for r in base_runs]),
        "dropout": _mean([r.dropout_saved_bytes for r in base_runs]),
        "throughput": _mean(base_tput),
        "acc": summarize(base_acc),
        "f1": summarize(base_f1),
    }
    rows = []
    for name, runs in runs_by.items():
        tput = _throughputs(exp1, name)
        acc = [r.test["accuracy"] for r in runs]
        f1 = [r.test["f1"] for r in runs]
        peak = _mean([r.memory.peak_bytes for r in runs])
        saved = _mean([r.memory.saved_bytes for r in runs])
        dropout = _mean([r.dropout_saved_bytes for r in runs])
        mask = _mean([r.memory.mask_bytes for r in runs])
        acc_s, f1_s = summarize(acc), summarize(f1)
        same_curves = [curves_equal(r.losses, base_by_seed[r.seed].losses) for r in runs]
        is_base = name == BASELINE
        row = {
            "variation": name,
            "label": VARIATIONS[name].label if name in VARIATIONS else "",
            "runs": len(runs),
            "peak_bytes": peak,
            "peak_saving": 1 - peak / base["peak"],
            "saved_bytes": saved,
            "saved_saving": 1 - saved / base["saved"],
            "dropout_saved_bytes": dropout,
            "dropout_reduction_x": base["dropout"] / dropout if dropout else math.inf,
            "mask_bytes": None if is_base else mask,
            "compression_vs_bool": None if is_base or not mask else exp1["mask_elements_per_step"] / mask,
            "median_step_s": median(exp1["interleaved_step_s"][name]),
            "median_step_s_training": median(r.median_step_s for r in runs),
            "throughput": summarize(tput),
            "throughput_change": relative_delta(_mean(tput), base["throughput"]),
            "throughput_welch": None
            if is_base or min(len(tput), len(base_tput)) < 2
            else welch(base_tput, tput).as_dict(),
            "accuracy": acc_s,
            "f1": f1_s,
            "accuracy_delta": relative_delta(acc_s["mean"], base["acc"]["mean"]),
            "accuracy_welch": None if is_base or len(acc) < 2 else welch(base_acc, acc).as_dict(),
            "f1_welch": None if is_base or len(f1) < 2 else welch(base_f1, f1).as_dict(),
            "accuracy_sigmas": sigmas(acc_s["mean"] - base["acc"]["mean"], base["acc"]["std"]),
            "f1_sigmas": sigmas(f1_s["mean"] - base["f1"]["mean"], base["f1"]["std"]),
            "loss_curves_identical": all(same_curves),
            "loss_max_abs_diff": max(max_abs_diff(r.losses, base_by_seed[r.seed].losses) for r in runs),
            "grad_cosine_min": min(r.grad_cosine for r in runs),
            "grads_identical": all(r.grad_identical for r in runs),
        }
        rows.append(row)
    rows.sort(key=lambda r: (r["variation"] != BASELINE, list(runs_by).index(r["variation"])))
    return rows


def sigmas(difference: float, std: float) -> float | None:
    """|difference| in units of the baseline's seed-to-seed std: 0 when there is no difference,
    None when the std is 0 and the difference is not (undefined: the baseline's seeds agree
    exactly, so no spread to measure against; the report says so)."""
    if difference == 0:
        return 0.0
    return None if std == 0 else abs(difference) / std


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both),
    sorted by the first coordinate: the memory / time trade-offs worth choosing.

    Example:
        >>> pareto_front([(1, 5), (2, 2), (3, 3), (4, 1)])
        [0, 1, 3]
    """
    front, best_y = [], float("inf")
    for i in sorted(range(len(points)), key=lambda i: points[i]):
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


@dataclass(frozen=True)
class SweepRow:
    """One shape of an exp-2 sweep: each variation's memory there (None: out of memory)."""

    batch: int
    seq_len: int
    memory: dict[str, StepMemory | None]

    def _both(self, name: str) -> tuple[StepMemory, StepMemory] | None:
        base, own = self.memory.get(BASELINE), self.memory.get(name)
        return None if base is None or own is None else (base, own)

    def peak_saving(self, name: str) -> float | None:
        """1 - variation `name`'s peak / the baseline's (None: either ran out of memory)."""
        both = self._both(name)
        return None if both is None else 1 - both[1].peak_bytes / both[0].peak_bytes

    def saved_saving(self, name: str) -> float | None:
        """1 - variation `name`'s saved bytes / the baseline's."""
        both = self._both(name)
        return None if both is None else 1 - both[1].saved_bytes / both[0].saved_bytes

    def saved_diff_bytes(self, name: str) -> int | None:
        """The baseline's saved bytes - variation `name`'s."""
        both = self._both(name)
        return None if both is None else both[0].saved_bytes - both[1].saved_bytes


def exp2_rows(exp2: Exp2Result) -> tuple[list[SweepRow], list[SweepRow]]:
    """(seq sweep rows, batch sweep rows): per shape, in sweep order, each variation's memory."""
    shapes: dict[str, dict[tuple[int, int], dict[str, StepMemory | None]]] = {"seq": {}, "batch": {}}
    for p in exp2.points:
        shapes[p.sweep].setdefault((p.batch, p.seq_len), {})[p.variation] = p.memory
    seq, batch = ([SweepRow(b, n, memory) for (b, n), memory in shapes[k].items()] for k in ("seq", "batch"))
    return seq, batch


STATUS = ("PASS", "FAIL", "NOT RUN")
RUN_COMMAND = "the run command above ({})"  # the report states the exact command once
TESTS = {
    "gradcheck": "python -m pytest tests/layers/test_mask_type.py tests/layers/test_mask_types_doc.py "
    "tests/integrations/test_hf_moe.py -k gradcheck -q",
    "compile": "python -m pytest tests/integrations/test_compile.py -q",
    "ddp": "python -m pytest tests/integrations/test_distributed.py -q",
    "amp": "python -m pytest tests/integrations/test_composition.py tests/integrations/test_huggingface.py "
    "tests/layers/test_mask_type.py -k 'autocast or bf16' -q",
}


def _criterion(
    name: str, target: str, measured: str, ok: bool | None, source: str, command: str
) -> dict[str, Any]:
    status = STATUS[2] if ok is None else STATUS[0 if ok else 1]
    return {
        "criterion": name,
        "target": target,
        "measured": measured,
        "status": status,
        "source": source,
        "command": command,
    }


def _sigma_text(value: float | None, std: float, difference: float) -> str:
    if value is None:
        return f"baseline seed std is 0 (its seeds agree exactly); |Δ| = {abs(difference):.4f}"
    return f"{value:.2f} sigma"


def _accuracy_criterion(task: str, rows: dict[str, dict[str, Any]], command: str) -> dict[str, Any]:
    """The worst packed variation's |Δ| / σ over accuracy and F1 (test set, mean over seeds)."""
    base = rows[BASELINE]
    worst, text = -1.0, ""
    for name, row in rows.items():
        if name == BASELINE:
            continue
        for metric in ("accuracy", "f1"):
            value = row[f"{metric}_sigmas"]
            diff = row[metric]["mean"] - base[metric]["mean"]
            score = math.inf if value is None else value
            if score > worst:
                worst = score
                text = f"{_sigma_text(value, base[metric]['std'], diff)} ({name}, {metric})"
    p = [r["accuracy_welch"]["p_value"] for n, r in rows.items() if n != BASELINE and r["accuracy_welch"]]
    text += f"; baseline accuracy {base['accuracy']['mean']:.3f} ± {base['accuracy']['std']:.3f}"
    text += f"; min Welch p (accuracy) {min(p):.2g}" if p else ""
    return _criterion(
        f"task metric within {MAX_METRIC_SIGMAS} sigma ({task})",
        f"<= {MAX_METRIC_SIGMAS} sigma",
        text,
        worst <= MAX_METRIC_SIGMAS,
        f"exp-1 {task}, every variation",
        command,
    )


def _exp1_criteria(exp1: dict[str, Any], command: str) -> list[dict[str, Any]]:
    tasks = exp1["tasks"]
    out = []
    for name, task in tasks.items():
        rows = {r["variation"]: r for r in exp1_rows(task)}
        if name == "text":
            main = rows.get(MAIN) or next(r for n, r in rows.items() if n != BASELINE)
            tag = f"exp-1 text, {main['variation']}"
            c = main["compression_vs_bool"]
            out.append(
                _criterion(
                    "mask compression vs a bool mask",
                    f">= {MIN_COMPRESSION}x",
                    f"{c:.2f}x" if c else "-",
                    None if c is None else c >= MIN_COMPRESSION,
                    tag,
                    command,
                )
            )
            out.append(
                _criterion(
                    "end-to-end peak memory saving, small model",
                    f">= {MIN_SAVING_SMALL:.0%}",
                    f"{main['peak_saving']:.1%}",
                    main["peak_saving"] >= MIN_SAVING_SMALL,
                    tag,
                    command,
                )
            )
            change, test = main["throughput_change"], main["throughput_welch"]
            slower = bool(test and test["significant"] and change < 0)
            p = (
                f", Welch p={test['p_value']:.2g}" + (" (significantly slower)" if slower else "")
                if test
                else ""
            )
            out.append(
                _criterion(
                    "throughput change",
                    f"within +/-{MAX_THROUGHPUT_CHANGE:.0%}, not significantly slower",
                    f"{change:+.1%}{p}",
                    abs(change) <= MAX_THROUGHPUT_CHANGE and not slower,
                    tag,
                    command,
                )
            )
        out.append(_accuracy_criterion(name, rows, command))
        # The fast sampler draws other random numbers than nn.Dropout by design: shown, not judged.
        exact = {n: r for n, r in rows.items() if n not in (BASELINE, FAST)}
        if exact:
            cos = min(r["grad_cosine_min"] for r in exact.values())
            text = f"{cos:.6f} (min over {', '.join(exact)})"
            text += "; bit-identical" if all(r["grads_identical"] for r in exact.values()) else ""
            text += f"; {FAST} (other draws): {rows[FAST]['grad_cosine_min']:.4f}" if FAST in rows else ""
            out.append(
                _criterion(
                    f"first-step gradient cosine vs baseline ({name})",
                    f">= {STUDY_GRAD_COSINE} (study's figure)",
                    text,
                    cos >= STUDY_GRAD_COSINE,
                    f"exp-1 {name}",
                    command,
                )
            )
    return out


def criteria(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's success criteria, each PASS / FAIL / NOT RUN with its figure and the command that
    reproduces it (the runner's own command, or the pytest command of the tests that check it)."""
    out = _exp1_criteria(results["exp-1"], RUN_COMMAND.format("exp-1")) if "exp-1" in results else []
    exp2 = Exp2Result.from_dict(results["exp-2"]) if "exp-2" in results else None
    out += _exp2_criteria(exp2, RUN_COMMAND.format("exp-2")) if exp2 else []
    out.append(
        _criterion(
            "gradcheck of every mask function",
            "passes",
            "checked by the test suite",
            None,
            "tests",
            TESTS["gradcheck"],
        )
    )
    systems = exp2.systems.rows if exp2 and exp2.systems else []
    for key, variant, name in (
        ("compile", "compile+patch", "works unmodified with torch.compile"),
        ("amp", "amp+patch", "works unmodified with AMP (bf16 autocast)"),
    ):
        row = next((r for r in systems if r.variant == variant), None)
        measured = (
            f"{variant} trained in exp-2 (loss {row.loss:.3f}); equality: the tests"
            if row
            else f"{variant} not among the exp-2 systems run; equality: the tests"
        )
        out.append(
            _criterion(
                name,
                "trains, same results",
                measured,
                None if row is None else math.isfinite(row.loss),
                "exp-2 systems + tests",
                f"{RUN_COMMAND.format('exp-2')}; {TESTS[key]}",
            )
        )
    out.append(
        _criterion(
            "works unmodified with DDP",
            "same gradients as one process",
            "checked by the test suite",
            None,
            "tests",
            TESTS["ddp"],
        )
    )
    return out


def _exp2_criteria(exp2: Exp2Result, command: str) -> list[dict[str, Any]]:
    seq_rows, _ = exp2_rows(exp2)
    name = next((v for v in exp2.settings["variations"] if v != BASELINE), MAIN)
    savings = [(r.seq_len, r.peak_saving(name), r.saved_diff_bytes(name)) for r in seq_rows]
    savings = [x for x in savings if x[1] is not None]
    out = []
    if savings:
        seq, best, _ = savings[-1]
        out.append(
            _criterion(
                "peak memory saving, longest sequence",
                f">= {MIN_SAVING_LARGE:.0%}",
                f"{best:.1%} at seq {seq}",
                best >= MIN_SAVING_LARGE,
                f"exp-2, {name}",
                command,
            )
        )
        per_token = [d / s for s, _, d in savings]
        # Linear growth keeps the saving per token constant; attention's (S, S) masks make it grow.
        grows = all(b >= 0.95 * a for a, b in zip(per_token, per_token[1:], strict=False))
        text = ", ".join(f"{s}: {d / 2**20:.1f} MiB ({d / s / 1024:.1f} KiB/token)" for s, _, d in savings)
        out.append(
            _criterion(
                "saved-bytes saving grows (at least) linearly with sequence length",
                "per-token saving not shrinking",
                text,
                grows if len(savings) > 1 else None,
                f"exp-2, {name}",
                command,
            )
        )
    fits = [c for c in exp2.showcase if not c.baseline_fits and c.variation == name]
    text = (
        "; ".join(
            f"batch {c.batch} x seq {c.seq_len}: baseline {baseline_peak(c)} > budget "
            f"{_mib(c.budget_bytes)} >= packed {_mib(c.packed_peak_bytes)}"
            for c in fits
        )
        or "none found"
    )
    out.append(
        _criterion(
            "a configuration fits that the baseline cannot", ">= 1", text, bool(fits), "exp-2", command
        )
    )
    return out


def baseline_peak(case: BudgetShowcase) -> str:
    """A showcase's baseline peak, or the smaller size at which it already exceeded the budget."""
    over = case.baseline_over_budget_at
    if case.baseline_peak_bytes is None and over is not None:
        return f"(not measured: over budget already at {case.kind} size {over})"
    return _mib(case.baseline_peak_bytes)


def _mib(n: int | None) -> str:
    return "OOM" if n is None else f"{n / 2**20:.0f} MiB"


def hypotheses(results: dict[str, Any]) -> list[dict[str, str]]:
    """The study's four hypotheses (compression, memory, speed, accuracy) with a one-line verdict."""
    by_name = {c["criterion"]: c for c in criteria(results)}
    groups = {
        "compression": ["mask compression vs a bool mask"],
        "memory": [
            "end-to-end peak memory saving, small model",
            "peak memory saving, longest sequence",
            "saved-bytes saving grows (at least) linearly with sequence length",
            "a configuration fits that the baseline cannot",
        ],
        "speed": ["throughput change"],
        "accuracy": [n for n in by_name if n.startswith(("task metric", "first-step gradient"))],
    }
    out = []
    for hypothesis, names in groups.items():
        found = [by_name[n] for n in names if n in by_name and by_name[n]["status"] != "NOT RUN"]
        if not found:
            verdict = "not measured in this run"
        elif all(c["status"] == "PASS" for c in found):
            verdict = "confirmed"
        elif any(c["status"] == "PASS" for c in found):
            verdict = "partly confirmed"
        else:
            verdict = "not confirmed"
        detail = "; ".join(f"{c['criterion']}: {c['measured']} ({c['status']})" for c in found)
        out.append({"hypothesis": hypothesis, "verdict": verdict, "evidence": detail})
    return out
