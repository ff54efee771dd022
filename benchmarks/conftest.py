"""pytest-benchmark hooks: a session-end table of each case's time and memory ratios vs "native".

The table follows pytest-benchmark's own; with ``--benchmark-autosave`` / ``--benchmark-save``
/ ``--benchmark-json`` the same rows are stored under ``"packedbool_summary"`` in the JSON, and
with ``--benchmark-compare`` a "time/saved run" column compares each median with the saved one.
Under ``--benchmark-disable`` nothing is timed, so nothing is printed.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.summary import format_table, summary_rows


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
