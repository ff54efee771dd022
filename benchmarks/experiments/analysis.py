"""From raw runs to tables and to a pass/fail verdict per success criterion of the study.

Example:
    >>> rows = exp1_rows(result["exp-1"])            # one row per variation, baseline first
    >>> seq_rows, batch_rows = exp2_rows(result["exp-2"])
    >>> for c in criteria(result): print(c["criterion"], c["status"])
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from .stats import curves_equal, max_abs_diff, relative_delta, summarize, welch
from .variations import BASELINE, VARIATIONS

__all__ = ["criteria", "exp1_rows", "exp2_rows", "hypotheses"]

# The study's success criteria (docs: /work/shared/STUDY.md, "Success criteria").
MIN_COMPRESSION = 7.5
MIN_SAVING_SMALL = 0.05
MIN_SAVING_LARGE = 0.10
MAX_THROUGHPUT_CHANGE = 0.02
MAX_METRIC_SIGMAS = 0.2
STUDY_GRAD_COSINE = 0.9994
MAIN = "packed-1bit-lazy"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _throughputs(exp1: dict[str, Any], name: str) -> list[float]:
    """Samples/s of every interleaved timing step of variation `name`."""
    return [exp1["settings"]["batch_size"] / t for t in exp1["interleaved_step_s"][name]]


def exp1_rows(exp1: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variation: memory, compression, speed, quality and equality figures, vs the baseline."""
    runs_by: dict[str, list[dict[str, Any]]] = {}
    for run in exp1["runs"]:
        runs_by.setdefault(run["variation"], []).append(run)
    base_runs = runs_by[BASELINE]
    base_by_seed = {r["seed"]: r for r in base_runs}
    base_tput = _throughputs(exp1, BASELINE)
    base_acc = [r["val"]["accuracy"] for r in base_runs]
    base = {
        "peak": _mean([r["memory"]["peak_bytes"] for r in base_runs]),
        "saved": _mean([r["memory"]["saved_bytes"] for r in base_runs]),
        "dropout": _mean([r["dropout_saved_bytes"] for r in base_runs]),
        "throughput": _mean(base_tput),
        "acc": summarize(base_acc),
        "f1": summarize([r["val"]["f1"] for r in base_runs]),
    }
    rows = []
    for name, runs in runs_by.items():
        tput = _throughputs(exp1, name)
        acc = [r["val"]["accuracy"] for r in runs]
        f1 = [r["val"]["f1"] for r in runs]
        peak = _mean([r["memory"]["peak_bytes"] for r in runs])
        saved = _mean([r["memory"]["saved_bytes"] for r in runs])
        dropout = _mean([r["dropout_saved_bytes"] for r in runs])
        mask = _mean([r["memory"]["mask_bytes"] for r in runs])
        acc_s, f1_s = summarize(acc), summarize(f1)
        same_curves = [curves_equal(r["losses"], base_by_seed[r["seed"]]["losses"]) for r in runs]
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
            "median_step_s_training": median(r["median_step_s"] for r in runs),
            "throughput": summarize(tput),
            "throughput_change": relative_delta(_mean(tput), base["throughput"]),
            "throughput_welch": None if is_base or min(len(tput), len(base_tput)) < 2 else welch(base_tput, tput).as_dict(),
            "accuracy": acc_s,
            "f1": f1_s,
            "accuracy_delta": relative_delta(acc_s["mean"], base["acc"]["mean"]),
            "accuracy_welch": None if is_base or len(acc) < 2 else welch(base_acc, acc).as_dict(),
            "accuracy_sigmas": _sigmas(acc_s["mean"] - base["acc"]["mean"], base["acc"]["std"]),
            "f1_sigmas": _sigmas(f1_s["mean"] - base["f1"]["mean"], base["f1"]["std"]),
            "loss_curves_identical": all(same_curves),
            "loss_max_abs_diff": max(max_abs_diff(r["losses"], base_by_seed[r["seed"]]["losses"]) for r in runs),
            "grad_cosine_min": min(r["grad_cosine"] for r in runs),
            "grads_identical": all(r["grad_identical"] for r in runs),
        }
        rows.append(row)
    rows.sort(key=lambda r: (r["variation"] != BASELINE, list(runs_by).index(r["variation"])))
    return rows


def _sigmas(difference: float, std: float) -> float:
    """|difference| in units of the baseline's seed-to-seed std (0 when both are 0)."""
    if difference == 0:
        return 0.0
    return math.inf if std == 0 else abs(difference) / std


def _peak(point: dict[str, Any]) -> int | None:
    return None if point["memory"] is None else point["memory"]["peak_bytes"]


def exp2_rows(exp2: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(seq sweep rows, batch sweep rows): per shape, each variation's peak and saved bytes and
    its saving vs the baseline."""
    out: dict[str, dict[tuple[int, int], dict[str, Any]]] = {"seq": {}, "batch": {}}
    for p in exp2["points"]:
        row = out[p["sweep"]].setdefault((p["batch"], p["seq_len"]), {"batch": p["batch"], "seq_len": p["seq_len"]})
        row[p["variation"]] = p["memory"]
    for rows in out.values():
        for row in rows.values():
            base = row.get(BASELINE)
            for name, memory in list(row.items()):
                if name in (BASELINE, "batch", "seq_len") or memory is None or base is None:
                    continue
                row[f"{name}:peak_saving"] = 1 - memory["peak_bytes"] / base["peak_bytes"]
                row[f"{name}:saved_saving"] = 1 - memory["saved_bytes"] / base["saved_bytes"]
                row[f"{name}:saved_diff_bytes"] = base["saved_bytes"] - memory["saved_bytes"]
    return list(out["seq"].values()), list(out["batch"].values())


def _criterion(name: str, target: str, measured: str, ok: bool | None, source: str) -> dict[str, Any]:
    status = "n/a" if ok is None else ("pass" if ok else "fail")
    return {"criterion": name, "target": target, "measured": measured, "status": status, "source": source}


def criteria(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's success criteria that these experiments measure, each with pass / fail / n/a."""
    out = []
    if "exp-1" in results:
        rows = {r["variation"]: r for r in exp1_rows(results["exp-1"])}
        main = rows.get(MAIN) or next(r for n, r in rows.items() if n != BASELINE)
        tag = f"exp-1, {main['variation']}"
        c = main["compression_vs_bool"]
        out.append(_criterion("mask compression vs a bool mask", f">= {MIN_COMPRESSION}x",
                              f"{c:.2f}x" if c else "-", None if c is None else c >= MIN_COMPRESSION, tag))
        out.append(_criterion("end-to-end peak memory saving, small model", f">= {MIN_SAVING_SMALL:.0%}",
                              f"{main['peak_saving']:.1%}", main["peak_saving"] >= MIN_SAVING_SMALL, tag))
        change, test = main["throughput_change"], main["throughput_welch"]
        p = f" (Welch p={test['p_value']:.2g})" if test else ""
        out.append(_criterion("throughput change", f"within +/-{MAX_THROUGHPUT_CHANGE:.0%}",
                              f"{change:+.1%}{p}", abs(change) <= MAX_THROUGHPUT_CHANGE, tag))
        sig = max(main["accuracy_sigmas"], main["f1_sigmas"])
        out.append(_criterion("task metric (accuracy, F1) vs seed-to-seed std", f"within {MAX_METRIC_SIGMAS} sigma",
                              f"{sig:.2f} sigma" + (" (loss curves bit-identical)" if main["loss_curves_identical"] else ""),
                              sig <= MAX_METRIC_SIGMAS, tag))
        out.append(_criterion("gradient cosine similarity vs baseline", f">= {STUDY_GRAD_COSINE} (study's figure)",
                              f"{main['grad_cosine_min']:.6f}" + (" (bit-identical)" if main["grads_identical"] else ""),
                              main["grad_cosine_min"] >= STUDY_GRAD_COSINE, tag))
    if "exp-2" in results:
        out += _exp2_criteria(results["exp-2"])
    return out


def _exp2_criteria(exp2: dict[str, Any]) -> list[dict[str, Any]]:
    seq_rows, _ = exp2_rows(exp2)
    name = next((v for v in exp2["settings"]["variations"] if v != BASELINE), MAIN)
    savings = [(r["seq_len"], r.get(f"{name}:peak_saving"), r.get(f"{name}:saved_diff_bytes")) for r in seq_rows]
    savings = [x for x in savings if x[1] is not None]
    out = []
    if savings:
        seq, best, _ = savings[-1]
        out.append(_criterion("peak memory saving, longest sequence", f">= {MIN_SAVING_LARGE:.0%}",
                              f"{best:.1%} at seq {seq}", best >= MIN_SAVING_LARGE, f"exp-2, {name}"))
        diffs = [d for _, _, d in savings]
        grows = all(b > a for a, b in zip(diffs, diffs[1:], strict=False))
        text = ", ".join(f"{s}: {d / 2**20:.1f} MiB" for s, _, d in savings)
        out.append(_criterion("saved-bytes saving grows with sequence length", "increasing", text,
                              grows if len(diffs) > 1 else None, f"exp-2, {name}"))
    fits = [c for c in exp2["showcase"] if not c["baseline_fits"] and c["variation"] == name]
    text = "; ".join(
        f"batch {c['batch']} x seq {c['seq_len']}: baseline {_mib(c['baseline_peak_bytes'])} > budget "
        f"{_mib(c['budget_bytes'])} >= packed {_mib(c['packed_peak_bytes'])}" for c in fits
    ) or "none found"
    out.append(_criterion("a configuration fits that the baseline cannot", ">= 1", text, bool(fits), "exp-2"))
    return out


def _mib(n: int | None) -> str:
    return "OOM" if n is None else f"{n / 2**20:.0f} MiB"


def hypotheses(results: dict[str, Any]) -> list[dict[str, str]]:
    """The study's four hypotheses (compression, memory, speed, accuracy) with a one-line verdict."""
    by_name = {c["criterion"]: c for c in criteria(results)}
    groups = {
        "compression": ["mask compression vs a bool mask"],
        "memory": ["end-to-end peak memory saving, small model", "peak memory saving, longest sequence",
                   "saved-bytes saving grows with sequence length", "a configuration fits that the baseline cannot"],
        "speed": ["throughput change"],
        "accuracy": ["task metric (accuracy, F1) vs seed-to-seed std", "gradient cosine similarity vs baseline"],
    }
    out = []
    for hypothesis, names in groups.items():
        found = [by_name[n] for n in names if n in by_name and by_name[n]["status"] != "n/a"]
        if not found:
            verdict = "not measured in this run"
        elif all(c["status"] == "pass" for c in found):
            verdict = "confirmed"
        elif any(c["status"] == "pass" for c in found):
            verdict = "partly confirmed"
        else:
            verdict = "not confirmed"
        detail = "; ".join(f"{c['criterion']}: {c['measured']} ({c['status']})" for c in found)
        out.append({"hypothesis": hypothesis, "verdict": verdict, "evidence": detail})
    return out
