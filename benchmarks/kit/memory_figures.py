"""The benchmark suite's memory figures, measured on one checkout and compared between two commits.

A change that must leave "the saved-bytes and retained-memory figures equal or lower" is checked
here. The figures are every ``*_bytes`` key a benchmark records in ``extra_info`` (saved, retained,
census, mask, peak): byte counts, as deterministic as the timings are not. ``measure`` runs the
suite at its full sizes (``--benchmark-disable`` would shrink the models) but times each case
once: ``benchmark.pedantic`` is held to one round without warm-up (every benchmark records its
figures outside the timed rounds) and ``benchmark(fn)`` to one calibrated round, with the long
sweeps included (``--benchmark-full``). The interleaved timings record no figure and are left out.

It imports nothing of packedbool, so one copy measures any checkout, older ones included: run
it by path from the checkout to measure, with that checkout on PYTHONPATH, then compare:

    cd /path/to/base && PYTHONPATH=$PWD python /path/to/memory_figures.py measure /tmp/base.json
    cd /path/to/head && PYTHONPATH=$PWD python /path/to/memory_figures.py measure /tmp/head.json
    python /path/to/memory_figures.py compare /tmp/base.json /tmp/head.json --markdown compare.md

Arguments after the output file go to pytest (default: the whole ``benchmarks`` folder), e.g.
``benchmarks --ignore=benchmarks/test_compile_bench.py``. ``compare`` matches benchmarks by test
id, else by (group, variant), and exits 1 when any figure grew.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

SUITE = "benchmarks"
# interleaved timings: they record no memory figure
TIMINGS_ONLY = (
    "test_dropout_interleaved",
    "test_pack_interleaved",
    "test_compiled_interleaved",
    "test_step_interleaved",
    "test_generate_interleaved",
)
CONTEXT_KEYS = ("group", "variant", "batch", "seq_len", "backend", "budget")

__all__ = ["compare", "figures", "measure"]


class _OneRound:
    """pytest plugin: each ``benchmark.pedantic`` runs one round without warm-up; the benchmarks
    that record no memory figure are deselected."""

    def pytest_configure(self, config: Any) -> None:
        from pytest_benchmark.fixture import BenchmarkFixture

        pedantic = BenchmarkFixture.pedantic

        def once(
            fixture: Any,
            target: Any,
            args: Any = (),
            kwargs: Any = None,
            setup: Any = None,
            teardown: Any = None,
            **_: Any,
        ) -> Any:
            return pedantic(
                fixture, target, args, kwargs, setup, teardown, rounds=1, warmup_rounds=0, iterations=1
            )

        BenchmarkFixture.pedantic = once
        if hasattr(config.option, "benchmark_full"):  # checkouts that have the option: every sweep
            config.option.benchmark_full = True

    def pytest_collection_modifyitems(self, config: Any, items: list) -> None:
        dropped = [item for item in items if item.originalname in TIMINGS_ONLY]
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item.originalname not in TIMINGS_ONLY]


def figures(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{test id: {"context": {...}, "figures": {key: bytes}}}`` from pytest-benchmark's JSON;
    benchmarks without a figure are left out."""
    out = {}
    for bench in raw["benchmarks"]:
        info = bench.get("extra_info", {})
        memory = {k: v for k, v in info.items() if k.endswith("_bytes") and v is not None}
        if memory:
            test_id = bench["fullname"].split("/")[-1]  # test_x_bench.py::test_y[params]
            context = {k: info.get(k, bench.get(k)) for k in CONTEXT_KEYS}
            out[test_id] = {"context": context, "figures": memory}
    return out


def measure(output: Path, pytest_args: list[str]) -> int:
    """Run the benchmarks (`pytest_args`) in the current checkout; write their figures to `output`.
    Returns pytest's exit code."""
    import pytest

    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.json"
        options = ["-q", "-p", "no:cacheprovider", f"--benchmark-json={raw_path}"]
        options += ["--benchmark-min-rounds=1", "--benchmark-max-time=0", "--benchmark-warmup=off"]
        code = int(pytest.main([*(pytest_args or [SUITE]), *options], plugins=[_OneRound()]))
        if not raw_path.exists():
            return code or 1
        raw = json.loads(raw_path.read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    record = {
        "checkout": os.getcwd(),
        "commit": commit.strip() or "?",
        "torch": version("torch"),
        "pytest_args": pytest_args,
        "benchmarks": figures(raw),
    }
    output.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"{len(record['benchmarks'])} benchmarks with memory figures -> {output}")
    return code


def _pairs(base: dict[str, Any], head: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(shown id, base id, head id): the same test id, else the same (group, variant)."""
    by_case = {(v["context"]["group"], v["context"]["variant"]): k for k, v in head.items()}
    pairs, matched = [], set()
    for key, value in base.items():
        other = key if key in head else by_case.get((value["context"]["group"], value["context"]["variant"]))
        pairs.append((key if other in (key, None) else f"{key} -> {other}", key, other))
        matched.add(other)
    return pairs + [(key, None, key) for key in head if key not in matched]


def _verdict(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return "only in " + ("candidate" if before is None else "baseline")
    return "equal" if after == before else "HIGHER" if after > before else "lower"


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,} ({value / 2**20:.2f} MiB)"


def compare(base: dict[str, Any], head: dict[str, Any]) -> tuple[list[str], Counter[str]]:
    """Markdown lines, one row per (benchmark, figure), and the count of each verdict ("equal",
    "lower", "HIGHER", "only in ...") of `head`'s figures against `base`'s (`measure`'s records)."""
    lines = [
        f"Baseline {base['commit']} ({base['checkout']}, torch {base['torch']}), candidate {head['commit']}"
        f" ({head['checkout']}, torch {head['torch']}). Ratio = candidate / baseline.",
        "",
        "| benchmark | figure | baseline | candidate | ratio | verdict |",
        "|---|---|---:|---:|---:|---|",
    ]
    verdicts: Counter[str] = Counter()
    for shown, old, new in _pairs(base["benchmarks"], head["benchmarks"]):
        before = base["benchmarks"][old]["figures"] if old else {}
        after = head["benchmarks"][new]["figures"] if new else {}
        for key in sorted(before.keys() | after.keys()):
            a, b = before.get(key), after.get(key)
            verdict = _verdict(a, b)
            verdicts[verdict] += 1
            ratio = f"{b / a:.4f}" if a and b is not None else "-"
            lines.append(f"| `{shown}` | {key} | {_bytes(a)} | {_bytes(b)} | {ratio} | {verdict} |")
    lines += ["", ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items())) + "."]
    return lines, verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("measure", help="run the benchmarks here; write their memory figures to OUTPUT")
    run.add_argument("output", type=Path)
    run.add_argument("pytest_args", nargs=argparse.REMAINDER)
    both = sub.add_parser("compare", help="BASE's figures against HEAD's; exit 1 if any grew")
    both.add_argument("base", type=Path)
    both.add_argument("head", type=Path)
    both.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if args.command == "measure":
        return measure(args.output, args.pytest_args)
    lines, verdicts = compare(*(json.loads(p.read_text()) for p in (args.base, args.head)))
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return int(verdicts["HIGHER"] > 0)


if __name__ == "__main__":
    sys.exit(main())
