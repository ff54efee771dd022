"""The benchmark suite's summary: each case's time and memory as ratios to its group's "native" row.

Every benchmark sets ``benchmark.group`` (the case) and ``extra_info["variant"]`` ("native" for
plain PyTorch, else the packed variant's name) and may record ``saved_bytes``, ``peak_bytes`` and
``mask_bytes`` in ``extra_info``. A ratio below 1 means the variant is faster / smaller. A group
without a native row may give its own time ratio, measured interleaved with native inside the
benchmark, as ``extra_info["interleaved_median_ratio"]`` (the table marks it with "i"), and native's
memory figures as ``extra_info["native_figures"]`` (`record_interleaved` writes both). A case with a
time target (``extra_info["target"]``, a ratio) gets a "target" column saying whether it was met.

Example:
    >>> rows = summary_rows(session.benchmarks)      # pytest-benchmark's Metadata objects
    >>> print("\\n".join(format_table(rows)))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from benchmarks.kit.interleave import median_ratio

NATIVE = "native"
INTERLEAVED = "interleaved_median_ratio"
NATIVE_FIGURES = "native_figures"
TARGET = "target"
MEMORY_KEYS = ("saved_bytes", "peak_bytes", "mask_bytes")

__all__ = ["MEMORY_KEYS", "NATIVE", "format_table", "missed_targets", "record_interleaved", "summary_rows"]


def record_interleaved(
    benchmark: Any,
    times: Mapping[str, list[float]],
    variant: str,
    *,
    target: float | None = None,
    native_figures: Mapping[str, int | None] | None = None,
    **figures: Any,
) -> float:
    """Put a variant's interleaved timing against ``times[NATIVE]`` (`kit.interleave.round_robin`) in
    its benchmark's extra_info, with its `target` time ratio, native's memory `native_figures` and the
    variant's own `figures`; returns the median ratio."""
    ratio = median_ratio(times, variant, NATIVE)
    benchmark.extra_info.update(figures, variant=variant, **{INTERLEAVED: ratio})
    benchmark.extra_info["interleaved_min_ratio"] = min(times[variant]) / min(times[NATIVE])
    if target is not None:
        benchmark.extra_info[TARGET] = target
    if native_figures is not None:
        benchmark.extra_info[NATIVE_FIGURES] = dict(native_figures)
    return ratio


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def summary_rows(
    benchmarks: Iterable[Any], compared: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One dict per benchmark: group, variant, name, median_s, time_ratio and <key>_ratio columns.

    Args:
        benchmarks: objects with ``group``, ``name``, ``fullname``, ``extra_info`` and
            ``stats.median`` (pytest-benchmark's Metadata); ones without stats are skipped.
        compared: ``{fullname: saved benchmark dict}`` from ``--benchmark-compare``; adds
            ``vs_saved`` = median / saved median.
    """
    done = [b for b in benchmarks if b and getattr(b, "stats", None)]
    native: dict[str | None, Any] = {}
    for bench in done:
        if bench.extra_info.get("variant") == NATIVE:
            native.setdefault(bench.group, bench)
    rows = []
    for bench in done:
        ref = native.get(bench.group)
        row: dict[str, Any] = {
            "group": bench.group or "(no group)",
            "variant": bench.extra_info.get("variant", "?"),
            "name": bench.name,
            "median_s": bench.stats.median,
            "time_ratio": _ratio(bench.stats.median, ref.stats.median)
            if ref
            else bench.extra_info.get(INTERLEAVED),
            "time_ratio_interleaved": ref is None and bench.extra_info.get(INTERLEAVED) is not None,
            "target": bench.extra_info.get(TARGET),
        }
        native_figures = ref.extra_info if ref else bench.extra_info.get(NATIVE_FIGURES, {})
        for key in MEMORY_KEYS:
            value = bench.extra_info.get(key)
            row[key] = value
            row[f"{key}_ratio"] = _ratio(value, native_figures.get(key))
        if compared:
            saved = compared.get(bench.fullname)
            row["vs_saved"] = _ratio(bench.stats.median, saved["stats"]["median"]) if saved else None
        rows.append(row)
    rows.sort(key=lambda r: (r["group"], r["variant"] != NATIVE, r["variant"], r["name"]))
    return rows


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def _fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} B"


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    """Fixed-width text lines: one header, then one line per row, groups separated by blanks."""
    if not rows:
        return []
    columns = [
        ("case", "group"),
        ("variant", "variant"),
        ("median", "median_s"),
        ("time/native", "time_ratio"),
    ]
    for key in MEMORY_KEYS:
        if any(r[key] is not None for r in rows):
            short = key.removesuffix("_bytes")
            columns += [(short, key), (f"{short}/native", f"{key}_ratio")]
    if any(r.get("target") is not None for r in rows):
        columns.insert(4, ("target", "target"))
    if any(r.get("vs_saved") is not None for r in rows):
        columns.append(("time/saved run", "vs_saved"))

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if key == "median_s":
            return _time(value)
        if key == "time_ratio" and row.get("time_ratio_interleaved"):
            return _fmt_ratio(value) + " i"
        if key == "target":
            return "-" if value is None else f"<= {value:.2f}x " + ("met" if _met(row) else "MISSED")
        if key.endswith("_ratio") or key == "vs_saved":
            return _fmt_ratio(value)
        if key in MEMORY_KEYS:
            return _fmt_bytes(value)
        return str(value)

    cells = [[title for title, _ in columns]] + [[cell(r, key) for _, key in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines, previous = [], None
    for row, line in zip([None, *rows], cells, strict=True):
        if row is not None and previous is not None and row["group"] != previous:
            lines.append("")
        previous = row["group"] if row is not None else None
        text = "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        lines.append(text.rstrip())
    if any(r.get("time_ratio_interleaved") for r in rows):
        lines += [
            "",
            f"i: time ratio measured interleaved with native inside the benchmark (extra_info {INTERLEAVED})",
        ]
    if any(r.get("target") is not None for r in rows):
        missed = missed_targets(rows)
        met = sum(r.get("target") is not None for r in rows) - len(missed)
        lines.append(f"targets: {met} met, {len(missed)} missed")
        lines += [f"  missed: {r['group']} / {r['variant']}" for r in missed]
    return lines


def _met(row: Mapping[str, Any]) -> bool:
    return row["time_ratio"] is not None and row["time_ratio"] <= row["target"]


def missed_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose time ratio is above their target."""
    return [r for r in rows if r.get("target") is not None and not _met(r)]
