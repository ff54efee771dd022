"""The budget search and exp-2, checked on real measured training steps of a tiny BERT."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from benchmarks.experiments.analysis import criteria, exp2_rows
from benchmarks.experiments.budget import largest_fitting
from benchmarks.experiments.records import Exp2Result
from benchmarks.kit.probes import step_memory
from benchmarks.kit.training import model_from_config, random_batch, train_step
from bittensor_core.errors import PackedBoolValueError

CONSTANT_TABLES = 64 * 1024


@pytest.fixture(scope="module")
def measured_peak(tiny_model_dir):
    """peak_of(batch): the real peak of one tracked training step at seq 64."""
    torch.manual_seed(0)
    model = model_from_config(str(tiny_model_dir), max_positions=128).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    train_step(model, optimizer, random_batch(model.config.vocab_size, 1, 8))
    calls: list[int] = []

    def peak_of(batch: int) -> int:
        calls.append(batch)
        return step_memory(model, optimizer, random_batch(model.config.vocab_size, batch, 64)).peak_bytes

    peak_of.calls = calls
    return peak_of


def test_search_on_real_steps_brackets_the_budget(measured_peak) -> None:
    budget = measured_peak(40)
    search = largest_fitting(measured_peak, budget, 1, 256)
    assert search.best is not None and search.best >= 40 and not search.capped
    fits, over = search.peak_at(search.best), search.peak_at(search.best + 1)
    assert fits is not None and fits <= budget < over
    assert all(p.fits == (p.peak_bytes <= budget) for p in search.probes)
    assert len(search.probes) == len({p.size for p in search.probes}) <= 12
    # Memory is deterministic: measuring the two deciding sizes again gives the same bytes.
    assert measured_peak(search.best) == fits and measured_peak(search.best + 1) == over


def test_search_edges_on_real_steps(measured_peak) -> None:
    small = measured_peak(1)
    nothing = largest_fitting(measured_peak, small - 1, 1, 64)
    assert nothing.best is None and len(nothing.probes) == 1
    capped = largest_fitting(measured_peak, measured_peak(8), 1, 8)
    assert capped.best == 8 and capped.capped
    with pytest.raises(PackedBoolValueError):
        largest_fitting(measured_peak, small, 0, 8)


def test_exp2_sweeps_and_searches(exp2_small: dict[str, Any]) -> None:
    s = exp2_small["settings"]
    seq_rows, batch_rows = exp2_rows(Exp2Result.from_dict(exp2_small))
    assert [r.seq_len for r in seq_rows] == list(s["seq_lens"])
    assert [r.batch for r in batch_rows] == list(s["batch_sizes"])
    for row in seq_rows + batch_rows:
        base, packed = row.memory["baseline"], row.memory["packed-1bit-lazy"]
        assert packed.saved_bytes < base.saved_bytes
        # Where the optimizer step sets the peak, packed may hold a few KiB more: constant lookup tables.
        assert packed.peak_bytes <= base.peak_bytes + CONSTANT_TABLES
        assert packed.mask_bytes > 0 and base.mask_bytes == 0
    assert seq_rows[-1].memory["packed-1bit-lazy"].peak_bytes < seq_rows[-1].memory["baseline"].peak_bytes
    diffs = [r.saved_diff_bytes("packed-1bit-lazy") for r in seq_rows]
    assert diffs == sorted(diffs) and diffs[0] < diffs[-1]
    budget = int(s["budget_mb"] * 2**20)
    for kind in ("batch", "seq"):
        base, packed = (exp2_small["search"][kind][n] for n in ("baseline", "packed-1bit-lazy"))
        assert packed["best"] >= base["best"]
        for result in (base, packed):
            peaks = {p["size"]: p["peak_bytes"] for p in result["probes"]}
            assert peaks[result["best"]] <= budget < peaks[result["best"] + 1]
    assert (
        exp2_small["search"]["batch"]["packed-1bit-lazy"]["best"]
        > exp2_small["search"]["batch"]["baseline"]["best"]
    )
    shows = [c for c in exp2_small["showcase"] if c["kind"] == "batch"]
    assert shows and not shows[0]["baseline_fits"]
    base_search = exp2_small["search"]["batch"]["baseline"]
    over = shows[0][
        "baseline_over_budget_at"
    ]  # a size at or below the showcase's where stock was over budget
    assert over is not None and over <= shows[0]["batch"] and shows[0]["packed_peak_bytes"] <= budget
    assert budget < {p["size"]: p["peak_bytes"] for p in base_search["probes"]}[over]
    found = {c["criterion"]: c for c in criteria({"exp-2": exp2_small})}
    assert found["a configuration fits that the baseline cannot"]["status"] == "PASS"
    assert found["saved-bytes saving grows (at least) linearly with sequence length"]["status"] == "PASS"


def test_exp2_result_reads_back_its_own_json_form(exp2_small: dict[str, Any]) -> None:
    """What run_exp2 returns (and results.json holds) decodes to records and encodes back unchanged."""
    result = Exp2Result.from_dict(exp2_small)
    assert result.points[0].memory.peak_bytes == exp2_small["points"][0]["memory"]["peak_bytes"]
    assert result.search["batch"]["baseline"].best == exp2_small["search"]["batch"]["baseline"]["best"]
    assert json.loads(json.dumps(result.as_dict())) == json.loads(json.dumps(exp2_small))
