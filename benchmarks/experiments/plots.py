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

from .analysis import exp1_rows  # noqa: E402
from .variations import BASELINE  # noqa: E402

__all__ = ["PLOTS", "loss_curves", "max_size", "memory_vs_batch", "memory_vs_seq", "throughput"]

MIB = 2**20
_STYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1))]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _variations(points: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(p["variation"] for p in points))


def _memory_vs(exp2: dict[str, Any], path: Path, sweep: str, x_key: str, x_label: str) -> Path | None:
    points = [p for p in exp2["points"] if p["sweep"] == sweep and p["memory"] is not None]
    if not points:
        return None
    fig, (ax_peak, ax_saved) = plt.subplots(1, 2, figsize=(10, 4))
    for i, name in enumerate(_variations(points)):
        own = sorted((p for p in points if p["variation"] == name), key=lambda p: p[x_key])
        xs = [p[x_key] for p in own]
        ax_peak.plot(xs, [p["memory"]["peak_bytes"] / MIB for p in own], marker="o", ls=_STYLES[i % 6], label=name)
        ax_saved.plot(xs, [p["memory"]["saved_bytes"] / MIB for p in own], marker="o", ls=_STYLES[i % 6], label=name)
    fixed = "batch" if sweep == "seq" else "seq"
    other = points[0]["batch"] if sweep == "seq" else points[0]["seq_len"]
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
    """Training loss per step, every variation and seed overlaid (identical curves coincide)."""
    runs = exp1["runs"]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    names = _variations(runs)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        for j, run in enumerate(r for r in runs if r["variation"] == name):
            ax.plot(range(1, len(run["losses"]) + 1), run["losses"], ls=_STYLES[i % 6], color=colors[j % len(colors)],
                    lw=2.5 if name == BASELINE else 1.2, alpha=0.8, label=f"{name} (seed {run['seed']})")
    ax.set(xlabel="step", ylabel="training loss", title="loss curves (colour: seed, line style: variation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def throughput(exp1: dict[str, Any], path: Path) -> Path | None:
    """Training throughput (samples/s, mean +/- std over steps after warm-up) per variation."""
    rows = exp1_rows(exp1)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["variation"] for r in rows]
    ax.bar(names, [r["throughput"]["mean"] for r in rows], yerr=[r["throughput"]["std"] for r in rows], capsize=4,
           color=["grey" if n == BASELINE else "tab:blue" for n in names])
    ax.set(ylabel="samples / s", title=f"training throughput ({exp1['machine']['device']})")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def max_size(exp2: dict[str, Any], path: Path) -> Path | None:
    """Largest batch and largest sequence length under the memory budget, per variation."""
    search = exp2.get("search") or {}
    if not search:
        return None
    s = exp2["settings"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, title in ((axes[0], "batch", f"largest batch (seq {s['search_seq']})"),
                            (axes[1], "seq", f"longest sequence (batch {s['search_batch']})")):
        names = list(search[kind])
        scale = s["seq_step"] if kind == "seq" else 1
        best = [(search[kind][n]["best"] or 0) * scale for n in names]
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
    "loss_curves.png": ("exp-1", loss_curves),
    "throughput.png": ("exp-1", throughput),
}
