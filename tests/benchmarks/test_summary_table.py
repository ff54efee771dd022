"""benchmarks/conftest.py's summary table, through real pytest-benchmark runs in a subprocess:
printed after timing, stored with --benchmark-autosave, compared with --benchmark-compare, and
silent under --benchmark-disable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEADER = "packedbool: time and memory vs native"

BENCH = """
import pytest
import torch
from benchmarks.kit.interleave import round_robin
from benchmarks.summary import record_interleaved
from bittensor_core import PackedBool

MASK = torch.rand(64, 1024) < 0.9

def test_native(benchmark):
    benchmark.group = "copy a mask"
    benchmark.extra_info["variant"] = "native"
    out = benchmark(MASK.clone)
    benchmark.extra_info["mask_bytes"] = out.numel()

def test_packed(benchmark):
    benchmark.group = "copy a mask"
    benchmark.extra_info["variant"] = "packed-1bit"
    out = benchmark(lambda: PackedBool(MASK))
    benchmark.extra_info["mask_bytes"] = out.packed_nbytes

@pytest.mark.parametrize("target", [100.0, 0.0])
def test_interleaved(benchmark, target):
    times = round_robin({"native": MASK.clone, "packed-1bit": lambda: PackedBool(MASK)}, rounds=3)
    benchmark.group = f"pack, interleaved, target {target}"
    record_interleaved(benchmark, times, "packed-1bit", target=target, native_figures={"mask_bytes": 8})
    benchmark.extra_info["mask_bytes"] = 1
    benchmark.pedantic(lambda: PackedBool(MASK), rounds=1)

@pytest.mark.full
def test_long_sweep(benchmark):
    benchmark.group = "a long sweep"
    benchmark.extra_info["variant"] = "native"
    benchmark(MASK.clone)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench_project")
    (root / "conftest.py").write_text(
        "from benchmarks.conftest import (pytest_addoption, pytest_benchmark_update_json, pytest_configure,\n"
        "    pytest_collection_modifyitems, pytest_terminal_summary)\n"
    )
    (root / "test_mask_bench.py").write_text(BENCH)
    return root


def _pytest(project: Path, *args: str, quiet: bool = True) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *(["-q"] if quiet else []),
            "-p",
            "no:cacheprovider",
            f"--benchmark-storage={project / 'store'}",
            "--benchmark-max-time=0.05",
            "--benchmark-min-rounds=3",
            *args,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _row(text: str, variant: str) -> list[str]:
    line = next(
        line for line in text.splitlines() if line.startswith("copy a mask") and f" {variant} " in line
    )
    return line.split()


def test_table_after_timing_and_autosave(project: Path) -> None:
    out = _pytest(project, "--benchmark-autosave")
    assert HEADER in out
    native, packed = _row(out, "native"), _row(out, "packed-1bit")
    assert native[-1] == "1.000x" and packed[-1] == "0.125x"  # 8 192 / 65 536 mask bytes
    saved = sorted((project / "store").rglob("*.json"))
    assert len(saved) == 1
    rows = json.loads(saved[0].read_text())["packedbool_summary"]
    assert {r["variant"]: r["mask_bytes_ratio"] for r in rows} == {"native": 1.0, "packed-1bit": 0.125}


def test_compare_adds_a_column(project: Path) -> None:
    if not list((project / "store").rglob("*.json")):
        _pytest(project, "--benchmark-autosave")
    out = _pytest(project, "--benchmark-compare")
    assert HEADER in out and "time/saved run" in out
    assert _row(out, "packed-1bit")[-1].endswith("x")


def test_targets_and_the_long_sweep(project: Path) -> None:
    out = _pytest(project, "--benchmark-only", quiet=False)
    assert "test_long_sweep SKIPPED (a long sweep" in out  # timed only with --benchmark-full
    assert "test_interleaved[100.0] PASSED" in out  # one line per case (pytest's -v): the progress
    met, missed = (
        next(line for line in out.splitlines() if line.startswith(f"pack, interleaved, target {t}"))
        for t in (100.0, 0.0)
    )
    assert " i " in met and "<= 100.00x met" in met and "0.125x" in met  # mask bytes 1 / native's 8
    assert "<= 0.00x MISSED" in missed
    assert "targets: 1 met, 1 missed" in out and "missed: pack, interleaved, target 0.0 / packed-1bit" in out
    assert "5 passed" in _pytest(project, "--benchmark-only", "--benchmark-full")


def test_silent_when_disabled(project: Path) -> None:
    out = _pytest(project, "--benchmark-disable")
    assert HEADER not in out and "5 passed" in out  # the long sweep too: every case runs once
