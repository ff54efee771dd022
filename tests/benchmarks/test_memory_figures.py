"""benchmarks/kit/memory_figures.py: a real run of a small benchmark file measured once per case,
its figures compared with an earlier run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.kit.memory_figures import compare

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kit" / "memory_figures.py"

BENCH = """
from pathlib import Path

import torch
from bittensor_core import PackedBool, SavedTensorCensus

CALLS = Path(__file__).with_name("calls.txt")


def _step(x):
    with CALLS.open("a") as calls:
        calls.write("step\\n")
    return (x * 2).sum()


def test_saved(benchmark):
    x = torch.ones(256, requires_grad=True)
    with SavedTensorCensus() as census:
        x.exp().sum()
    benchmark.group = "exp"
    benchmark.extra_info.update(variant="native", saved_bytes=census.total_bytes, batch=1)
    benchmark.pedantic(_step, args=(x,), rounds=20, warmup_rounds=3)


def test_mask(benchmark):
    benchmark.group = "pack"
    benchmark.extra_info.update(variant="packed-1bit", mask_bytes=PackedBool(torch.ones(64, 64) > 0).packed_nbytes)
    benchmark(lambda: None)


def test_dropout_interleaved(benchmark):
    raise AssertionError("a benchmark that records no figure runs")


def test_time_only(benchmark):
    benchmark.extra_info["variant"] = "native"
    benchmark(lambda: None)
"""


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("figures_project")
    (root / "test_small_bench.py").write_text(BENCH)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "measure", str(root / "out.json"), "test_small_bench.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root, json.loads((root / "out.json").read_text())


def test_measure_records_each_figure_once_timed(measured: tuple[Path, dict]) -> None:
    root, record = measured
    benchmarks = record["benchmarks"]
    assert set(benchmarks) == {"test_small_bench.py::test_saved", "test_small_bench.py::test_mask"}
    assert benchmarks["test_small_bench.py::test_saved"]["figures"] == {"saved_bytes": 256 * 4}
    assert benchmarks["test_small_bench.py::test_saved"]["context"]["batch"] == 1
    assert benchmarks["test_small_bench.py::test_mask"]["figures"] == {"mask_bytes": 64 * 64 // 8}
    assert (root / "calls.txt").read_text().count("step") == 1  # one round, no warm-up


def test_compare_flags_a_figure_that_grew(measured: tuple[Path, dict]) -> None:
    _, base = measured
    head = json.loads(json.dumps(base))
    head["benchmarks"]["test_small_bench.py::test_saved"]["figures"]["saved_bytes"] += 4
    moved = head["benchmarks"].pop("test_small_bench.py::test_mask")
    head["benchmarks"]["test_moved_bench.py::test_mask"] = moved  # found again by (group, variant)

    lines, verdicts = compare(base, head)

    assert verdicts == {"HIGHER": 1, "equal": 1}
    assert any("test_mask -> test_moved_bench.py::test_mask" in line and "equal" in line for line in lines)
    assert compare(base, base)[1] == {"equal": 2}
