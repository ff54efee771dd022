"""The experiment runner that reproduces the PM-Drop study (``python -m benchmarks.experiments``).

- `exp1`: fine-tuning with every variation x seed (memory, compression, speed, accuracy, equality);
- `exp2`: memory vs sequence length and batch; the largest size under a memory budget (`budget`);
- `variations`, `training`, `probes`: what is compared and how one configuration is measured;
- `stats`, `analysis`: statistics, tables and the verdict per success criterion;
- `report`, `plots`: report.md, PNG plots, results.json and CSV; `runner`: the command line.
"""
