"""Hypothesis strategies shared by the core tests: random bool masks of awkward shapes."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

WIDTHS = (1, 2, 4, 8)
MODES = ("lazy", "cached")

shapes = st.lists(st.integers(0, 19), min_size=0, max_size=3).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 19), min_size=1, max_size=3).map(tuple)


@st.composite
def masks(draw: st.DrawFn, shape_strategy: st.SearchStrategy = shapes) -> torch.Tensor:
    shape = draw(shape_strategy)
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) < density
