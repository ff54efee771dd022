"""Write an output folder: report.md (opening with the verdict per success criterion, then tables
and plots), results.json and CSV files, from the results of `run_exp1` / `run_exp2`.

Example:
    >>> write_report({"exp-1": r1, "exp-2": r2}, Path("results/quick"), command="python -m ...")
    PosixPath('results/quick/report.md')
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .analysis import SweepRow, baseline_peak, criteria, exp1_rows, exp2_rows, hypotheses, pareto_front
from .budget import Search
from .records import Exp1Run, Exp2Result
from .variations import BASELINE

__all__ = ["write_report"]

MIB = 2**20


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f}"


def _pct(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    return "0.0%" if abs(x) < 5e-4 else f"{x:+.1%}"


def _mean_std(s: dict[str, float], fmt: str = ".3f") -> str:
    return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"


def _saving(row: dict[str, Any], key: str = "peak_saving") -> str:
    """A saving vs the baseline: +x% = x% less memory; "-" on the baseline's own row."""
    return "-" if row["variation"] == BASELINE else _pct(row[key])


def _p(welch: dict[str, Any] | None) -> str:
    if welch is None:
        return "-"
    return "identical" if welch["identical"] else f"{welch['p_value']:.2g}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _machine(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    return (
        f"{m['cpu']} ({m['cpu_cores']} cores, torch uses {m['torch_threads']} threads){gpu}; device {m['device']}; "
        f"torch {m['torch']}, transformers {m.get('transformers', '-')}, Python {m['python']}; {m['platform']}"
    )


# ---- sections -------------------------------------------------------------------------------------
def _summary_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Verdict per success criterion of the study",
        "",
        "The study's criteria (docs/study.md), as measured in this run; NOT RUN: not measured by this run, the",
        "command names the tests that check it.",
        "",
    ]
    lines += _table(
        ["criterion", "target", "measured", "status", "from", "reproduce"],
        [
            [
                c["criterion"],
                c["target"],
                c["measured"],
                f"**{c['status']}**",
                c["source"],
                _command(c["command"]),
            ]
            for c in criteria(results)
        ],
    )
    lines += [
        "",
        "One-line integration: every packed variation here is one `patch_model` call.",
        "",
        "## Verdict per hypothesis",
        "",
    ]
    lines += _table(
        ["hypothesis", "verdict", "evidence"],
        [[h["hypothesis"], f"**{h['verdict']}**", h["evidence"]] for h in hypotheses(results)],
    )
    return lines + [""]


def _command(text: str) -> str:
    return "; ".join(f"`{c}`" if c.startswith("python") else c for c in text.split("; "))


def _sigma(value: float | None) -> str:
    return "σ=0" if value is None else f"{value:.2f}"


def _task_section(exp1: dict[str, Any], task: dict[str, Any]) -> list[str]:
    s, c, rows = exp1["settings"], task["config"], exp1_rows(task)
    what = (
        f"`{s['model']}` fine-tuned on `{s['dataset']}`, seq {s['seq_len']}"
        if task["task"] == "text"
        else "a ViT (image 8, patch 2, hidden 64, 4 layers, dropout 0.1) trained from scratch on the digits"
    )
    lines = [
        f"## exp-1 {task['task']}: {task['model']}",
        "",
        f"{what}; {task['train_size']} train / {task['val_size']} val / {task['test_size']} test examples (fixed split), "
        f"batch {task['batch_size']}, {task['steps']} steps (fixed; the final model is evaluated on test, val gives "
        f"the curve), AdamW lr {c['lr']}, seeds {list(s['seeds'])}, baseline attention `{s['baseline_attn']}`. "
        f"Mask elements per step: {task['mask_elements_per_step']:,}.",
        "",
        "### Memory and compression",
        "",
        "peak: live bytes at the peak of one training step (after training). saved: bytes autograd saved in the",
        "forward. dropout-saved: saved bytes with dropout on minus with it off (masks plus any dropped copy kept).",
        "compression: mask elements / stored mask bytes (a bool mask is 1 byte per element).",
        "",
    ]
    lines += _table(
        [
            "variation",
            "peak MiB",
            "peak saving",
            "saved MiB",
            "saved saving",
            "dropout-saved MiB",
            "dropout-saved x less",
            "mask bytes",
            "compression vs bool",
        ],
        [
            [
                r["variation"],
                _mib(r["peak_bytes"]),
                _saving(r),
                _mib(r["saved_bytes"]),
                _saving(r, "saved_saving"),
                _mib(r["dropout_saved_bytes"]),
                "-" if r["variation"] == BASELINE else f"{r['dropout_reduction_x']:.1f}x",
                "-" if r["mask_bytes"] is None else f"{r['mask_bytes']:,.0f}",
                "-" if r["compression_vs_bool"] is None else f"{r['compression_vs_bool']:.2f}x",
            ]
            for r in rows
        ],
    )
    lines += [
        "",
        "### Speed",
        "",
        f"Interleaved timing: {s['timing_rounds']} rounds, each running every variation (rotated order) for one",
        f"untimed and {s['timing_steps']} timed steps on one batch; throughput per timed step, Welch's t-test vs",
        "baseline. The training runs' own median step time is shown for reference.",
        "",
    ]
    lines += _table(
        [
            "variation",
            "median step ms",
            "samples/s (mean ± std)",
            "change vs base",
            "Welch p",
            "median step ms (training runs)",
        ],
        [
            [
                r["variation"],
                f"{r['median_step_s'] * 1e3:.0f}",
                _mean_std(r["throughput"], ".2f"),
                _pct(r["throughput_change"]) if r["variation"] != BASELINE else "-",
                _p(r["throughput_welch"]),
                f"{r['median_step_s_training'] * 1e3:.0f}",
            ]
            for r in rows
        ],
    )
    lines += [
        "",
        "### Quality and equality",
        "",
        "Test accuracy / F1 of the final model (mean ± std over seeds); sigmas: |Δ mean| / the baseline's",
        "seed-to-seed std (criterion <= 0.2; σ=0: the baseline's seeds agree exactly, the ratio is undefined);",
        "loss curves and first-step gradients compared with the baseline of the same seed, bit for bit.",
        "",
    ]
    lines += _table(
        [
            "variation",
            "test accuracy",
            "test F1",
            "Δ accuracy",
            "sigmas (acc / F1)",
            "Welch p (acc / F1)",
            "loss curves identical",
            "max |Δ loss|",
            "grad cosine (min)",
            "grads identical",
        ],
        [
            [
                r["variation"],
                _mean_std(r["accuracy"]),
                _mean_std(r["f1"]),
                _pct(r["accuracy_delta"]),
                f"{_sigma(r['accuracy_sigmas'])} / {_sigma(r['f1_sigmas'])}",
                f"{_p(r['accuracy_welch'])} / {_p(r['f1_welch'])}",
                "yes" if r["loss_curves_identical"] else "no",
                f"{r['loss_max_abs_diff']:.2g}",
                f"{r['grad_cosine_min']:.8f}",
                "yes" if r["grads_identical"] else "no",
            ]
            for r in rows
        ],
    )
    return lines + [""]


def _exp1_section(exp1: dict[str, Any], plots: dict[str, Path]) -> list[str]:
    lines = []
    for task in exp1["tasks"].values():
        lines += _task_section(exp1, task)
    for name in ("loss_curves.png", "throughput.png"):
        if name in plots:
            lines += [f"![{name}]({name})", ""]
    return lines


def _sweep_table(rows: list[SweepRow], names: list[str]) -> list[str]:
    header = ["batch", "seq"] + [f"{n} peak MiB" for n in names] + [f"{n} saved MiB" for n in names]
    header += [f"{n} peak saving" for n in names[1:]] + [f"{n} saved saving" for n in names[1:]]
    body = []
    for r in rows:
        mem = [r.memory.get(n) for n in names]
        body.append(
            [r.batch, r.seq_len]
            + [_mib(m.peak_bytes) if m else "OOM" for m in mem]
            + [_mib(m.saved_bytes) if m else "OOM" for m in mem]
            + [_pct(r.peak_saving(n)) for n in names[1:]]
            + [_pct(r.saved_saving(n)) for n in names[1:]]
        )
    return _table(header, body)


def _exp2_section(exp2: Exp2Result, plots: dict[str, Path]) -> list[str]:
    s, cfg = exp2.settings, exp2.model_config
    names = list(dict.fromkeys(p.variation for p in exp2.points))
    seq_rows, batch_rows = exp2_rows(exp2)
    lines = [
        "## exp-2: scaling and memory budget",
        "",
        f"Architecture of `{s['model']}` ({cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
        f"{cfg['num_attention_heads']} heads, {exp2.parameters / 1e6:.1f} M parameters), random weights, random "
        "token ids without padding (memory depends on shapes only); one tracked AdamW step per point. "
        "A saving of +x% means the packed variation needs x% less than the baseline.",
        "",
        f"### Sequence length sweep (batch {s['seq_batch']})",
        "",
    ]
    lines += _sweep_table(seq_rows, names)
    lines += ["", f"### Batch sweep (seq {s['batch_seq']})", ""]
    lines += _sweep_table(batch_rows, names)
    for name in ("memory_vs_seq.png", "memory_vs_batch.png"):
        if name in plots:
            lines += ["", f"![{name}]({name})"]
    lines += [
        "",
        f"### Largest size under a {s['budget_mb']:.0f} MiB budget",
        "",
        "Every probe is a measured step; the best size fits and the next one was measured not to.",
        "",
    ]
    body = []
    for kind, by_name in exp2.search.items():
        unit = (
            f"x {s['seq_step']} tokens, batch {s['search_batch']}"
            if kind == "seq"
            else f"seq {s['search_seq']}"
        )
        for name, r in by_name.items():
            best = r.best if kind == "batch" or r.best is None else r.best * s["seq_step"]
            probes = ", ".join(
                f"{p.size}: {_mib(p.peak_bytes)}" for p in sorted(r.probes, key=lambda p: p.size)
            )
            body.append([f"{kind} ({unit})", name, f"**{best}**" + (" (cap)" if r.capped else ""), probes])
    lines += _table(["search", "variation", "largest fitting", "probes (size: peak MiB)"], body)
    lines += ["", "Configurations the packed variation fits and the baseline does not:", ""]
    lines += _table(
        ["batch", "seq", "budget MiB", "baseline peak MiB", "packed peak MiB", "variation"],
        [
            [
                c.batch,
                c.seq_len,
                _mib(c.budget_bytes),
                baseline_peak(c),
                _mib(c.packed_peak_bytes),
                c.variation,
            ]
            for c in exp2.showcase
        ]
        or [["-"] * 6],
    )
    if "max_size.png" in plots:
        lines += ["", "![max_size.png](max_size.png)"]
    if exp2.systems:
        lines += _systems_section(exp2, plots)
    return lines + [""]


def _systems_section(exp2: Exp2Result, plots: dict[str, Path]) -> list[str]:
    s, systems = exp2.settings, exp2.systems
    rows = systems.rows
    front = {rows[i].variant for i in pareto_front([(r.peak_bytes, r.median_s) for r in rows])}
    base = rows[0]
    lines = [
        "",
        f"### What else a user short of memory would pick (batch {s['system_batch']}, seq {s['system_seq']})",
        "",
        "The real pretrained model (`benchmarks.kit.toolbox` variants), stock default attention; "
        f"{s['system_rounds']} interleaved rounds of one step per variant (rotated order). retained: bytes made by",
        "the forward and still alive after it (what the graph keeps for backward, checkpoint-held inputs",
        f"included). time ratio: median over rounds of step time / `{base.variant}`'s. Pareto: no other variant",
        "is both smaller and faster.",
        "",
    ]
    lines += _table(
        [
            "variant",
            "peak MiB",
            "peak vs stock",
            "retained MiB",
            "retained vs stock",
            "median step ms",
            "time ratio",
            "Pareto",
            f"largest batch under {systems.budget_bytes / MIB:.0f} MiB",
        ],
        [
            [
                r.variant,
                _mib(r.peak_bytes),
                f"{r.peak_bytes / base.peak_bytes:.2f}x",
                _mib(r.retained_bytes),
                f"{r.retained_bytes / base.retained_bytes:.2f}x",
                f"{r.median_s * 1e3:.0f}",
                f"{r.time_ratio:.3f}x",
                "yes" if r.variant in front else "",
                _best(systems.search.get(r.variant)),
            ]
            for r in rows
        ],
    )
    if systems.not_searched:
        lines += [
            "",
            f"Not searched: {', '.join(systems.not_searched)} (torch.compile specialises on shapes: every",
            "probed batch would recompile, minutes each on 2 CPU cores; `dynamic=True` compiles other code).",
        ]
    if "pareto.png" in plots:
        lines += ["", "![pareto.png](pareto.png)"]
    return lines


def _best(search: Search | None) -> str:
    if search is None:
        return "-"
    return "none" if search.best is None else f"{search.best}" + (" (cap)" if search.capped else "")


_METHOD = """## How it was measured

- Peak memory: on CPU the exact live-storage peak of `torch.distributed._tools.mem_tracker.MemTracker`
  (model, optimizer and batch tracked, plus every storage an op creates; numpy-made buffers enter through
  `aten.lift_fresh` and are counted); on CUDA `torch.cuda.max_memory_allocated()` after
  `reset_peak_memory_stats()`. Both include parameters, gradients, optimizer state, activations and temporaries.
  At small sizes the peak is set by the optimizer step (AdamW temporaries), where masks are already freed.
- Saved bytes: `bittensor_core.SavedTensorCensus` (each storage once; a PackedBool at its packed size).
- Times: exp-1's speed figures come from its interleaved timing (every variation in turn, rotated, in one
  process, on one batch), so a change in the machine's load hits all variations alike. Absolute CPU times
  depend on the machine and its load.
- Statistics: mean ± std over seeds, Welch's two-sample t-test (alpha 0.05), exact equality of loss curves.
"""


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(f"{prefix}{key}.", sub).items()}
    return {prefix.rstrip("."): value}


def _csv_files(results: dict[str, Any], out: Path) -> None:
    if "exp-1" in results:
        tasks = results["exp-1"]["tasks"]
        runs = [
            _flat(
                "",
                {"task": name}
                | {k: v for k, v in r.items() if k not in ("losses", "step_times_s", "val_curve")}
                | {"final_loss": Exp1Run.from_dict(r).losses[-1]},
            )
            for name, t in tasks.items()
            for r in t["runs"]
        ]
        _write_csv(out / "exp1_runs.csv", runs)
        _write_csv(
            out / "exp1_summary.csv",
            [_flat("", {"task": name} | r) for name, t in tasks.items() for r in exp1_rows(t)],
        )
    if "exp-2" in results:
        exp2 = Exp2Result.from_dict(results["exp-2"])
        _write_csv(out / "exp2_points.csv", [_flat("", p.as_dict()) for p in exp2.points])
        probes = [
            {"search": kind, "variation": name, "best": r.best, **asdict(p)}
            for kind, by_name in exp2.search.items()
            for name, r in by_name.items()
            for p in r.probes
        ]
        _write_csv(out / "exp2_search.csv", probes)
        rows = exp2.systems.rows if exp2.systems else []
        _write_csv(
            out / "exp2_systems.csv",
            [{k: v for k, v in asdict(r).items() if k != "step_s"} for r in rows],
        )


def write_report(results: dict[str, Any], out: Path, *, command: str = "") -> Path:
    """Write report.md, results.json, CSV files and PNG plots into `out`; return report.md's path."""
    from .plots import PLOTS

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    _csv_files(results, out)
    plots = {}
    for name, (experiment, draw) in PLOTS.items():
        if experiment in results and draw(results[experiment], out / name) is not None:
            plots[name] = out / name
    first = next(iter(r for k, r in results.items() if k.startswith("exp-")))
    lines = ["# packedbool: reproducing the PM-Drop study", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"Machine: {_machine(first['machine'])}", ""]
    if "wall_s" in results:
        lines += ["Run time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in results["wall_s"].items()), ""]
    if "resumed" in results:
        r = results["resumed"]
        lines += [
            f"Runs: {r['computed']} computed now, {r['reused']} read from `runs/` (earlier, same settings).",
            "",
        ]
    lines += _summary_section(results)
    if "exp-1" in results:
        lines += _exp1_section(results["exp-1"], plots)
    if "exp-2" in results:
        lines += _exp2_section(Exp2Result.from_dict(results["exp-2"]), plots)
    lines += [_METHOD]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
