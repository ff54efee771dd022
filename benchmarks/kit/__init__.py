"""The measuring kit: what the benchmark suite (``benchmarks/test_*_bench.py``) and the study runner
(``benchmarks.experiments``) both measure with. It imports neither of them; both import it.

- `memory`: peak bytes, saved-for-backward bytes and bytes retained after a forward, of one call;
- `probes`: one training step timed, and its memory (`step_memory`);
- `training`: models, data as fixed-length tensors, one training step, evaluation;
- `sources`: the real pretrained model and data, offline, with their provenance;
- `toolbox`: the memory knobs a user can turn (`VARIANTS`), built on the real model and timed
  interleaved (``python -m benchmarks.kit.toolbox``);
- `tiny_bert`: the suite's TinyBERT-shaped training case; `tiny_vit`: the study's small ViT;
- `interleave`: several ways of doing one job timed round-robin, compared as ratios;
- `memory_figures`: the suite's memory figures on one checkout, compared between two commits (run by
  path, so it measures older checkouts too).
"""
