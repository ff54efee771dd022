"""The experiment runner that reproduces the PM-Drop study (``python -m benchmarks.experiments``;
the study's criteria: docs/study.md).

- `exp1`: training with every task x variation x seed (memory, compression, speed, accuracy, equality);
  `records`: the runs' records (`Exp1Run`, exp-2's `Exp2Result`) and their JSON form;
  `tasks`: what is trained (MiniLM on the Rotten Tomatoes sentences, a ViT on the digits);
- `exp2`: memory vs sequence length and batch; the largest size under a memory budget (`budget`);
  the alternatives a user short of memory would pick (`benchmarks.kit.toolbox` variants);
- `variations`: what is compared (measured with `benchmarks.kit`);
- `stats`, `analysis`: statistics, tables and the verdict per success criterion;
- `report`, `plots`: report.md, PNG plots, results.json and CSV; `resume`: per-run JSON files a
  restarted run reuses; `runner`: the command line.
"""
