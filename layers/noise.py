"""The dropout noise tensor {0, 1 / (1 - p)}, decoded straight from packed mask bytes.

``F.dropout`` multiplies by a float noise tensor holding 0 or 1 / (1 - p); the packed layers
rebuild exactly that tensor from the mask's packed bytes with `bittensor_core.Mask.scaled`
(one table lookup per byte). Then ``x * noise`` is the very op F.dropout runs.
"""

from __future__ import annotations

import torch

from bittensor_core.tracing import constant, tracing


def noise_scale(p: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """1 / (1 - p) as a 0-dim tensor of `dtype`, rounded exactly as F.dropout rounds its noise.

    NOTE(rounding): F.dropout on CPU computes ``noise = bernoulli(1 - p).div_(1 - p)``; ``torch.native_dropout``
    multiplies by the double 1 / (1 - p) instead, and the two differ in the last bit for some p
    (0.123 and 0.45 in float32). Using this value keeps outputs and gradients bit-identical to
    nn.Dropout for every p. With p = 1 (nothing kept) the scale is 1.
    """
    if tracing():  # a constant, rebuilt in backward, never saved: see NOTE (CSE) in layers.checkpointing
        return constant(_scale_value(p, dtype), dtype, device)
    one = torch.ones((), dtype=dtype, device=device)
    return one if p >= 1.0 else one.div_(1.0 - p)


@torch.compiler.assume_constant_result
def _scale_value(p: float, dtype: torch.dtype) -> float:
    """`noise_scale` on CPU as a Python float (exact: a float64 holds any float16/32 value)."""
    return 1.0 if p >= 1.0 else torch.ones((), dtype=dtype).div_(1.0 - p).item()
