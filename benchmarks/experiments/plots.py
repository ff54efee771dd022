"""PNG plots of the experiments (matplotlib, Agg backend): one function per figure, each returns
the file it wrote, or None when the results lack what it draws.

Example:
    >>> loss_curves(result["exp-1"], Path("out/loss_curves.png"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from .analysis import exp1_rows, pareto_front  # noqa: E402
from .records import Exp1Run, Exp2Result, SweepPoint  # noqa: E402
from .variations import BASELINE  # noqa: E402

__all__ = ["PLOTS", "loss_curves", "max_size", "memory_vs_batch", "memory_vs_seq", "pareto", "throughput"]

MIB = 2**20
_STYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1))]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _variations(records: list[SweepPoint] | list[Exp1Run]) -> list[str]:
    return list(dict.fromkeys(r.variation for r in records))


def _memory_vs(exp2: dict[str, Any], path: Path, sweep: str, x_field: str, x_label: str) -> Path | None:
    points = [p for p in Exp2Result.from_dict(exp2).points if p.sweep == sweep and p.memory is not None]
    if not points:
        return None
    fig, (ax_peak, ax_saved) = plt.subplots(1, 2, figsize=(10, 4))
    for i, name in enumerate(_variations(points)):
        own = sorted((p for p in points if p.variation == name), key=lambda p: getattr(p, x_field))
        xs = [getattr(p, x_field) for p in own]
        ax_peak.plot(xs, [p.memory.peak_bytes / MIB for p in own], marker="o", ls=_STYLES[i % 6], label=name)
        ax_saved.plot(
            xs, [p.memory.saved_bytes / MIB for p in own], marker="o", ls=_STYLES[i % 6], label=name
        )
    fixed = "batch" if sweep == "seq" else "seq"
    other = points[0].batch if sweep == "seq" else points[0].seq_len
    for ax, title in ((ax_peak, "peak memory per training step"), (ax_saved, "saved for backward")):
        ax.set(xlabel=x_label, ylabel="MiB", title=f"{title} ({fixed} {other})")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def memory_vs_seq(exp2: dict[str, Any], path: Path) -> Path | None:
    """Peak and saved MiB vs sequence length, one line per variation."""
    return _memory_vs(exp2, path, "seq", "seq_len", "sequence length")


def memory_vs_batch(exp2: dict[str, Any], path: Path) -> Path | None:
    """Peak and saved MiB vs batch size, one line per variation."""
    return _memory_vs(exp2, path, "batch", "batch", "batch size")


def loss_curves(exp1: dict[str, Any], path: Path) -> Path | None:
    """Per task (columns): training loss per step (top) and validation accuracy (bottom), every
    variation and seed overlaid (identical curves coincide)."""
    tasks = {name: t for name, t in exp1["tasks"].items() if t["runs"]}
    if not tasks:
        return None
    fig, axes = plt.subplots(2, len(tasks), figsize=(7 * len(tasks), 7), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (task_name, task) in enumerate(tasks.items()):
        ax_loss, ax_val = axes[0][col], axes[1][col]
        runs = [Exp1Run.from_dict(r) for r in task["runs"]]
        for i, name in enumerate(_variations(runs)):
            for j, run in enumerate(r for r in runs if r.variation == name):
                style = dict(
                    ls=_STYLES[i % 6],
                    color=colors[j % len(colors)],
                    lw=2.5 if name == BASELINE else 1.2,
                    alpha=0.8,
                    label=f"{name} (seed {run.seed})",
                )
                ax_loss.plot(range(1, len(run.losses) + 1), run.losses, **style)
                ax_val.plot(*zip(*run.val_curve, strict=True), marker=".", **style)
        ax_loss.set(
            xlabel="step", ylabel="training loss", title=f"{task_name}: loss (colour: seed, style: variation)"
        )
        ax_val.set(xlabel="step", ylabel="validation accuracy", title=f"{task_name}: validation accuracy")
        for ax in (ax_loss, ax_val):
            ax.grid(alpha=0.3)
        ax_loss.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def throughput(exp1: dict[str, Any], path: Path) -> Path | None:
    """Training throughput (samples/s, mean +/- std over interleaved steps) per variation, per task."""
    tasks = exp1["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4), squeeze=False)
    for ax, (task_name, task) in zip(axes[0], tasks.items(), strict=True):
        rows = exp1_rows(task)
        names = [r["variation"] for r in rows]
        ax.bar(
            names,
            [r["throughput"]["mean"] for r in rows],
            yerr=[r["throughput"]["std"] for r in rows],
            capsize=4,
            color=["grey" if n == BASELINE else "tab:blue" for n in names],
        )
        ax.set(ylabel="samples / s", title=f"{task_name}: training throughput ({exp1['machine']['device']})")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def pareto(exp2: dict[str, Any], path: Path) -> Path | None:
    """Peak memory (x) vs median step time (y) of each system variant, labelled, Pareto front drawn."""
    result = Exp2Result.from_dict(exp2)
    rows = result.systems.rows if result.systems else []
    if not rows:
        return None
    points = [(r.peak_bytes / MIB, r.median_s) for r in rows]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (row, (x, y)) in enumerate(zip(rows, points, strict=True)):
        ax.scatter(x, y, color="tab:red" if i in front else "tab:blue", zorder=3)
        ax.annotate(row.variant, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.plot(*zip(*(points[i] for i in front), strict=True), color="tab:red", ls="--", label="Pareto front")
    s = result.settings
    ax.set(
        xlabel="peak memory per training step (MiB)",
        ylabel="median step time (s)",
        title=f"memory vs time, batch {s['system_batch']} seq {s['system_seq']} ({result.machine['device']})",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def max_size(exp2: dict[str, Any], path: Path) -> Path | None:
    """Largest batch and largest sequence length under the memory budget, per variation."""
    result = Exp2Result.from_dict(exp2)
    search, s = result.search, result.settings
    if not search:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, title in (
        (axes[0], "batch", f"largest batch (seq {s['search_seq']})"),
        (axes[1], "seq", f"longest sequence (batch {s['search_batch']})"),
    ):
        names = list(search[kind])
        scale = s["seq_step"] if kind == "seq" else 1
        best = [(search[kind][n].best or 0) * scale for n in names]
        ax.bar(names, best, color=["grey" if n == BASELINE else "tab:green" for n in names])
        for x, value in enumerate(best):
            ax.annotate(str(value), (x, value), ha="center", va="bottom")
        ax.set(title=f"{title}, budget {s['budget_mb']:.0f} MiB")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# file name -> (experiment, plot function)
PLOTS = {
    "memory_vs_seq.png": ("exp-2", memory_vs_seq),
    "memory_vs_batch.png": ("exp-2", memory_vs_batch),
    "max_size.png": ("exp-2", max_size),
    "pareto.png": ("exp-2", pareto),
    "loss_curves.png": ("exp-1", loss_curves),
    "throughput.png": ("exp-1", throughput),
}
