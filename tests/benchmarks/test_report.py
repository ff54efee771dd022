"""report.md, results.json, CSV and PNG files written from small real runs; the command line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.experiments.analysis import criteria, hypotheses
from benchmarks.experiments.plots import PLOTS
from benchmarks.experiments.report import write_report
from benchmarks.experiments.runner import main, parse_args, profile

from .conftest import exp2_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory,
    exp1_small: dict[str, Any],
    exp2_small: dict[str, Any],
    systems_small: dict[str, Any],
):
    exp2 = exp2_small | {
        "systems": systems_small,
        "settings": exp2_small["settings"] | {"system_batch": 2, "system_seq": 16},
    }
    results = {"wall_s": {"exp-1": 1.0, "exp-2": 2.0}, "exp-1": exp1_small, "exp-2": exp2}
    out = tmp_path_factory.mktemp("report")
    return results, write_report(results, out, command="python -m benchmarks.experiments --test")


def test_files_are_written(written) -> None:
    results, report = written
    out = report.parent
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results, default=str))
    with (out / "exp1_runs.csv").open() as fh:
        runs = list(csv.DictReader(fh))
    tasks = results["exp-1"]["tasks"]
    assert len(runs) == sum(len(t["runs"]) for t in tasks.values())
    assert {r["variation"] for r in runs} == {"baseline", "packed-1bit-lazy", "packed-4bit", "seeded-0bit"}
    assert {r["task"] for r in runs} == {"text", "image"}
    assert float(runs[0]["memory.peak_bytes"]) == tasks["text"]["runs"][0]["memory"]["peak_bytes"]
    with (out / "exp2_points.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(results["exp-2"]["points"])
    with (out / "exp2_search.csv").open() as fh:
        probes = list(csv.DictReader(fh))
    assert len(probes) == sum(
        len(r["probes"]) for by in results["exp-2"]["search"].values() for r in by.values()
    )


def test_report_states_every_verdict_and_embeds_the_plots(written) -> None:
    results, report = written
    text = report.read_text()
    assert "`python -m benchmarks.experiments --test`" in text
    verdicts = text.index("## Verdict per success criterion")
    assert verdicts < text.index("## exp-1") < text.index("## exp-2")
    for c in criteria(results):
        assert f"| {c['criterion']} | {c['target']} | {c['measured']} | **{c['status']}** |" in text
    for h in hypotheses(results):
        assert f"| {h['hypothesis']} | **{h['verdict']}** |" in text
    for name in PLOTS:
        assert f"]({name})" in text
    for name in ("baseline", "packed-1bit-lazy", "packed-4bit", "seeded-0bit"):
        assert f"| {name} |" in text
    assert "Run time: exp-1 0.0 min, exp-2 0.0 min" in text


def test_command_line_runs_exp2_quick_end_to_end(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    budget = exp2_settings(tiny_model_dir).budget_mb
    out = tmp_path / "cli"
    argv = [
        "exp-2",
        "--quick",
        "--model",
        str(tiny_model_dir),
        "--seq-lens",
        "64,128",
        "--budget-mb",
        f"{budget}",
        "--systems",
        "",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["command", "wall_s", "exp-2", "resumed"]
    assert results["exp-2"]["settings"]["seq_lens"] == [64, 128] and results["resumed"]["reused"] == 0
    assert sorted(p.name for p in (out / "runs" / "exp-2" / "scaling").iterdir()) == [
        "baseline.json",
        "packed-1bit-lazy.json",
    ]
    assert "report:" in capsys.readouterr().out
    assert (out / "report.md").read_text().startswith("# packedbool")


def test_arguments() -> None:
    args = parse_args(["--quick", "--seeds", "3,4", "--variations", "packed-2bit"])
    assert args.experiments == ["exp-1", "exp-2"] and args.seeds == (3, 4) and args.quick
    assert profile(args) == "quick" and profile(parse_args(["--standard"])) == "standard"
    assert profile(parse_args([])) == "full"
    with pytest.raises(SystemExit):
        parse_args(["exp-3"])
    with pytest.raises(SystemExit):
        parse_args(["--quick", "--standard"])


def test_module_entry_point_from_repo_root() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.experiments", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "exp-1" in done.stdout and "--standard" in done.stdout


def test_system_comparison_rows_pareto_and_verdicts(written, systems_small: dict[str, Any]) -> None:
    results, report = written
    text = report.read_text()
    rows = {r["variant"]: r for r in systems_small["rows"]}
    assert list(rows) == ["native", "patch", "amp+patch"]
    assert rows["patch"]["retained_bytes"] < rows["native"]["retained_bytes"]
    assert all(len(r["step_s"]) == 2 and r["loss"] > 0 for r in rows.values())
    assert set(systems_small["search"]) == set(rows) and systems_small["not_searched"] == []
    for search in systems_small["search"].values():
        assert search["best"] is not None and all(
            p["fits"] == (p["peak_bytes"] <= search["budget_bytes"]) for p in search["probes"]
        )
    assert "![pareto.png](pareto.png)" in text and "| native |" in text and "| amp+patch |" in text
    found = {c["criterion"]: c for c in criteria(results)}
    assert found["works unmodified with AMP (bf16 autocast)"]["status"] == "PASS"
    assert found["works unmodified with torch.compile"]["status"] == "NOT RUN"  # not among these systems
