"""docs/compatibility.md's table "What CI tests" is the one statement of the tested versions.

Each CI stage runs this file: what is installed must be a row of the table. The table's rows must be
the versions .ci/run pins, and pyproject's ranges must run from the oldest to the newest tested release.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "compatibility.md"
PACKAGES = ("torch", "transformers", "peft", "accelerate")
SECTION = "## What CI tests"


def _table() -> dict[str, dict[str, str]]:
    """The table under `SECTION`: {stage: {"Python": "3.11", "torch": "2.13.0", ...}}."""
    section = DOC.read_text().split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip(" `") for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    header, *body = [row for row in rows if not set("".join(row)) <= set("-:")]
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in body}


def _installed() -> dict[str, str]:
    """Python's minor version and each package's release (a local label like ``+cpu`` dropped)."""
    found = {"Python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    return found | {name: version(name).split("+")[0] for name in PACKAGES}


def _ci_pins(venv: str) -> dict[str, str]:
    """The ``name==version`` pins on .ci/run's line that activates `venv`."""
    (line,) = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if f". {venv}/bin/activate" in line
    ]
    return dict(re.findall(r"\b([a-z-]+)==([0-9.]+)", line))


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_what_is_installed_is_a_row_of_the_table() -> None:
    installed, table = _installed(), _table()
    unlisted = [
        f"{name} {v}" for name, v in installed.items() if v not in {row[name] for row in table.values()}
    ]
    assert not unlisted, (
        f"{', '.join(unlisted)} ran but {DOC} lists no such version under '{SECTION}': add it"
    )
    assert any(installed.items() <= row.items() for row in table.values()), (
        f"{installed} ran together, but no row of '{SECTION}' in {DOC} says so: update the row of this CI stage"
    )


@pytest.mark.parametrize(("stage", "venv"), [("floor", ".venv-floor"), ("newest torch", ".venv-torch")])
def test_the_table_has_the_versions_ci_pins(stage: str, venv: str) -> None:
    row = _table()[stage]
    pins = _ci_pins(venv)
    assert pins and {name: row[name] for name in pins} == pins, (stage, row, ".ci/run pins", pins)


@pytest.mark.parametrize("name", PACKAGES)
def test_pyproject_range_runs_from_the_oldest_to_the_newest_tested_release(name: str) -> None:
    """``name>=A.B,<C.D``: A.B the oldest tested release's minor, C.D the one after the newest's."""
    floor, ceiling = re.search(
        rf'"{name}>=([0-9.]+),<([0-9.]+)"', (ROOT / "pyproject.toml").read_text()
    ).groups()
    tested = sorted(_release(row[name]) for row in _table().values())
    oldest, newest = tested[0], tested[-1]
    assert _release(floor) == oldest[:2], (name, floor, "oldest tested", oldest)
    assert _release(ceiling) == (newest[0], newest[1] + 1), (name, ceiling, "newest tested", newest)
