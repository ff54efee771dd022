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
import torch
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
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench_project")
    (root / "conftest.py").write_text(
        "from benchmarks.conftest import pytest_benchmark_update_json, pytest_terminal_summary\n"
    )
    (root / "test_mask_bench.py").write_text(BENCH)
    return root


def _pytest(project: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
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


def test_silent_when_disabled(project: Path) -> None:
    out = _pytest(project, "--benchmark-disable")
    assert HEADER not in out and "2 passed" in out
