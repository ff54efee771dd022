"""The README's commands and example are the ones that really run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(b.strip() for b in _blocks("bash") if "--benchmark-disable" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_benchmark_command_runs_the_benchmark_suite() -> None:
    bench_command = next(b.strip() for b in _blocks("bash") if "--benchmark-only" in b)
    assert bench_command.endswith("python -m pytest --benchmark-only")


def test_readme_example_runs() -> None:
    (example,) = _blocks("python")
    exec(compile(example, "README.md", "exec"), {})
