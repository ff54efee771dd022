"""`BernoulliMask`: keep each mask element with probability 1 - p and rescale by 1 / (1 - p).

Dropout, attention-probability dropout, DropHead-style head gates and DropPath are this one mask
type over different mask shapes (the mask broadcasts against the input). Forward is
``x * noise`` and backward ``grad * noise`` with ``noise = mask / (1 - p)``, exactly the ops
F.dropout and timm's drop_path run, so results match them bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bittensor_core import Mask, plain_bool

from .mask_type import Draw, MaskType, Shape
from .noise import noise_scale


class BernoulliMask(MaskType):
    """out = x * mask / (1 - p), mask ~ Bernoulli(1 - p) of shape ``shape_of(x)`` (broadcast to x).

    Args:
        p: probability of dropping an element, in [0, 1].
        shape_of: the mask's shape for an input, e.g. ``lambda x: (x.shape[0], 1, 1)`` (DropPath on
            (B, S, D)); default the input's own shape (element-wise dropout).
        keep_only: an optional fixed bool mask AND-ed into every sampled mask (a pruning head mask).
        rescale: divide kept elements by 1 - p (True for dropout-like masks).
        inplace: write the result into x.

    Example:
        >>> drop_rows = BernoulliMask(0.2, shape_of=lambda x: (x.shape[0], 1))
        >>> y = apply_mask(drop_rows, torch.randn(8, 16))        # whole rows dropped
    """

    def __init__(
        self,
        p: float,
        shape_of: Callable[[torch.Tensor], Shape] | None = None,
        *,
        keep_only: torch.Tensor | None = None,
        rescale: bool = True,
        inplace: bool = False,
    ) -> None:
        self.p, self.shape_of, self.keep_only = p, shape_of, keep_only
        self.rescale, self.inplace = rescale, inplace

    def noise(self, mask: Mask | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``mask / (1 - p)`` in like's dtype: F.dropout's noise tensor (mask's shape)."""
        scale = noise_scale(self.p if self.rescale else 0.0, like.dtype, like.device)
        if isinstance(mask, Mask) and mask.numel() == like.numel():  # full-size: decode the bytes in one pass
            return mask.scaled(scale)
        return plain_bool(mask).to(like.dtype).mul_(scale)  # a broadcast mask is small

    def sample(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        mask = draw(x.shape if self.shape_of is None else self.shape_of(x), 1.0 - self.p)
        if self.keep_only is not None:
            mask = plain_bool(mask) & self.keep_only.to(mask.device)
        return mask

    def apply(self, mask: torch.Tensor, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        noise = self.noise(mask, x)
        return x.mul_(noise) if self.inplace else x * noise

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor]:
        return (grad_out * self.noise(mask, grad_out),)
