"""pytest-benchmark hooks: a session-end table of each case's time and memory ratios vs "native".

The table follows pytest-benchmark's own; with ``--benchmark-autosave`` / ``--benchmark-save``
/ ``--benchmark-json`` the same rows are stored under ``"packedbool_summary"`` in the JSON, and
with ``--benchmark-compare`` a "time/saved run" column compares each median with the saved one.
Under ``--benchmark-disable`` nothing is timed, so nothing is printed.

Cases marked ``full`` (long sweeps: sequence lengths, widths, compile budgets) are timed only with
``--benchmark-full``, so the default ``--benchmark-only`` run keeps every comparison and stays short;
under ``--benchmark-disable`` they all run once, as tests. While timing, each case gets its own
progress line under ``--benchmark-only`` (pytest's ``-v``).
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.summary import format_table, summary_rows

FULL_ONLY = pytest.mark.skip(reason="a long sweep: timed only with --benchmark-full")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmark-full", action="store_true", help="also time the long sweeps (cases marked 'full')"
    )


def _timing(config: pytest.Config) -> bool:
    return config.getoption("benchmark_enable", False) or not config.getoption("benchmark_disable", False)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_only", False) and config.option.verbose == 0:
        config.option.verbose = 1  # one line per case, with pytest's percentage: cases take seconds


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("benchmark_only", False):  # the tests: deselected, not 2,000 "SKIPPED" lines
        tests = [item for item in items if "benchmark" not in getattr(item, "fixturenames", ())]
        config.hook.pytest_deselected(items=tests)
        items[:] = [item for item in items if "benchmark" in getattr(item, "fixturenames", ())]
    if not _timing(config) or config.getoption("benchmark_full", False):
        return
    for item in items:
        if "full" in item.keywords:
            item.add_marker(FULL_ONLY)


def _compared(session: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for mapping in (session.compared_mapping or {}).values():
        merged.update(mapping)
    return merged


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled:
        return
    lines = format_table(summary_rows(session.benchmarks, _compared(session)))
    if not lines:
        return
    terminalreporter.write_sep("-", "packedbool: time and memory vs native (ratio < 1: faster / smaller)")
    for line in lines:
        terminalreporter.write_line(line)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    output_json["packedbool_summary"] = summary_rows(benchmarks)
