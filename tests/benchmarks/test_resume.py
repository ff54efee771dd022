"""Resume from disk: per-run JSON files, reused when the settings match, redone when they do not."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.experiments.exp1 import run_exp1
from benchmarks.experiments.resume import RunStore, settings_hash

from .conftest import exp1_settings


def test_store_reuses_same_settings_and_redoes_changed_ones(tmp_path: Path, capsys) -> None:
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"loss": [1.0, 0.5], "shape": (2, 3)}

    first = RunStore(tmp_path).get("exp-1/text/baseline-seed0", {"lr": 1e-3}, compute)
    assert first == {"loss": [1.0, 0.5], "shape": [2, 3]}  # as JSON gives it back
    stored = json.loads((tmp_path / "exp-1/text/baseline-seed0.json").read_text())
    assert stored["settings_hash"] == settings_hash({"lr": 1e-3}) and stored["result"] == first
    store = RunStore(tmp_path)
    assert store.get("exp-1/text/baseline-seed0", {"lr": 1e-3}, compute) == first and len(calls) == 1
    assert store.reused == ["exp-1/text/baseline-seed0"] and store.computed == []
    store.get("exp-1/text/baseline-seed0", {"lr": 2e-3}, compute)
    assert len(calls) == 2 and store.computed == ["exp-1/text/baseline-seed0"]
    assert "made with other settings" in capsys.readouterr().out
    (tmp_path / "exp-1/text/baseline-seed0.json").write_text("{truncated")
    store.get("exp-1/text/baseline-seed0", {"lr": 2e-3}, compute)
    assert len(calls) == 3 and "unreadable" in capsys.readouterr().out
    assert RunStore(None).get("x", {}, compute) == first and len(calls) == 4
    assert not list(tmp_path.rglob("*.tmp"))


def test_interrupted_exp1_resumes_without_recomputing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """An "interrupted" run (seed 0 only) then the full one (seeds 0, 1): seed 0 is read from disk."""
    settings = dict(
        tasks=("text",), steps=2, variations=("packed-1bit-lazy",), timing_rounds=1, timing_steps=1
    )
    first_store = RunStore(tmp_path)
    first = run_exp1(exp1_settings(tiny_model_dir, seeds=(0,), **settings), progress=False, store=first_store)
    done = ["exp-1/text/baseline-seed0", "exp-1/text/packed-1bit-lazy-seed0", "exp-1/text/timing"]
    assert first_store.computed == done
    mtimes = {name: (tmp_path / f"{name}.json").stat().st_mtime_ns for name in done}

    store = RunStore(tmp_path)
    full = run_exp1(exp1_settings(tiny_model_dir, seeds=(0, 1), **settings), progress=False, store=store)
    assert store.reused == done
    assert store.computed == ["exp-1/text/baseline-seed1", "exp-1/text/packed-1bit-lazy-seed1"]
    assert {name: (tmp_path / f"{name}.json").stat().st_mtime_ns for name in done} == mtimes
    runs = full["tasks"]["text"]["runs"]
    assert runs[:2] == first["tasks"]["text"]["runs"] and [r["seed"] for r in runs] == [0, 0, 1, 1]
    # The packed seed-1 run was computed against the baseline's gradient of seed 1: bit-identical.
    assert runs[3]["grad_identical"] and runs[3]["losses"] == runs[2]["losses"]

    # A packed run missing while its baseline is on disk: the baseline's first-step gradient is redone.
    (tmp_path / "exp-1/text/packed-1bit-lazy-seed1.json").unlink()
    store = RunStore(tmp_path)
    again = run_exp1(exp1_settings(tiny_model_dir, seeds=(0, 1), **settings), progress=False, store=store)
    assert store.computed == ["exp-1/text/packed-1bit-lazy-seed1"]
    redone, before = again["tasks"]["text"]["runs"][3], runs[3]
    assert redone["grad_identical"] and redone["grad_cosine"] == before["grad_cosine"]
    assert (redone["losses"], redone["test"], redone["memory"]) == (
        before["losses"],
        before["test"],
        before["memory"],
    )
