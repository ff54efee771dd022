"""Run the chosen experiments and write their report; `main` is the command line.

Every training run, timing and search is written to ``--out/runs/`` as it finishes; started
again with the same settings, the runner reads those files instead of redoing them, and the report
is rebuilt from all of them.

Example:
    $ python -m benchmarks.experiments exp-1 exp-2 --quick --out results/quick
    $ python -m benchmarks.experiments --standard --out results/standard    # ~45 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .exp1 import Exp1Settings, run_exp1
from .exp2 import Exp2Settings, run_exp2
from .report import write_report
from .resume import RunStore

__all__ = ["main", "parse_args", "run"]

EXPERIMENTS = ("exp-1", "exp-2")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.experiments",
        description="Reproduce the PM-Drop study: exp-1 (fine-tuning, every variation x seed) and exp-2 "
        "(memory vs sequence length and batch, largest size under a budget). Writes report.md, PNG plots, "
        "results.json and CSV files to --out.",
    )
    parser.add_argument(
        "experiments", nargs="*", metavar="{exp-1,exp-2}", help="which to run (default: both)"
    )
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument(
        "--quick", action="store_true", help="minutes on 2 CPU cores: few steps, chance accuracy"
    )
    profile.add_argument(
        "--standard",
        action="store_true",
        help="under an hour on 2 CPU cores: real accuracy, 3 seeds, system comparison",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default results/<profile>); runs already in <out>/runs are reused",
    )
    parser.add_argument(
        "--seeds", type=_ints, default=None, help="comma-separated seeds for exp-1, e.g. 0,1,2"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--model", default=None, help="model name (default all-MiniLM-L6-v2, offline)")
    parser.add_argument(
        "--dataset",
        default=None,
        help="exp-1 data: rotten-tomatoes-vader (default, offline), glue/sst2, glue/mrpc",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="exp-1 training steps per run, replacing the epoch count (both tasks)",
    )
    parser.add_argument("--epochs", type=float, default=None, help="exp-1 text epochs")
    parser.add_argument("--train-limit", type=int, default=None, help="exp-1 training sentences")
    parser.add_argument("--tasks", default=None, help="exp-1 tasks, comma-separated: text,image")
    parser.add_argument(
        "--baseline-attn",
        default=None,
        help="the baseline's attention implementation (default sdpa; eager in --quick)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="exp-1 batch size")
    parser.add_argument("--seq-len", type=int, default=None, help="exp-1 sequence length")
    parser.add_argument(
        "--variations", default=None, help="comma-separated packed variations (the baseline always runs)"
    )
    parser.add_argument("--budget-mb", type=float, default=None, help="exp-2 memory budget in MiB")
    parser.add_argument(
        "--seq-lens", type=_ints, default=None, help="exp-2 sequence lengths, e.g. 128,256,512"
    )
    parser.add_argument(
        "--systems",
        default=None,
        help="exp-2 system variants (benchmarks.kit.toolbox names), comma-separated; '' for none",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    unknown = [e for e in args.experiments if e not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    args.experiments = list(dict.fromkeys(args.experiments)) or list(EXPERIMENTS)
    return args


def _overrides(args: argparse.Namespace, fields: tuple[str, ...]) -> dict[str, Any]:
    out = {field: getattr(args, field) for field in fields if getattr(args, field) is not None}
    for name in ("variations", "tasks", "systems"):
        if name in out:
            out[name] = tuple(v.strip() for v in out[name].split(",") if v.strip())
    return out


_COMMON = ("device", "model", "variations", "baseline_attn")
_EXPERIMENTS = {
    "exp-1": (
        Exp1Settings,
        run_exp1,
        (*_COMMON, "seeds", "dataset", "steps", "epochs", "train_limit", "tasks", "batch_size", "seq_len"),
    ),
    "exp-2": (Exp2Settings, run_exp2, (*_COMMON, "budget_mb", "seq_lens", "systems")),
}


def profile(args: argparse.Namespace) -> str:
    """The settings profile the flags chose: quick, standard or full (no flag)."""
    return "quick" if args.quick else "standard" if args.standard else "full"


def run(args: argparse.Namespace, command: str = "") -> Path:
    """Run `args.experiments`; write the report (again after each experiment) and return report.md.
    Runs already stored in ``<out>/runs`` with the same settings are read, not run again."""
    out = args.out or Path("results") / profile(args)
    store = RunStore(out / "runs")
    results: dict[str, Any] = {"command": command, "wall_s": {}}
    report = out / "report.md"
    for name in args.experiments:
        cls, run_one, fields = _EXPERIMENTS[name]
        chosen = getattr(cls, profile(args))(**_overrides(args, fields))
        start = time.perf_counter()
        results[name] = run_one(chosen, progress=not args.no_progress, store=store)
        results["wall_s"][name] = time.perf_counter() - start
        results["resumed"] = {"computed": len(store.computed), "reused": len(store.reused)}
        report = write_report(results, out, command=command)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    report = run(args, command=shlex.join(["python", "-m", "benchmarks.experiments", *argv]))
    results = json.loads((report.parent / "results.json").read_text(encoding="utf-8"))
    from .analysis import criteria

    print(f"\nreport: {report}")
    for c in criteria(results):
        print(f"  [{c['status']:>7}] {c['criterion']}: {c['measured']} (target {c['target']})")
    return 0
