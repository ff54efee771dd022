"""`DropPath` (stochastic depth): drop a residual branch for whole samples, mask kept packed.

Same arithmetic and random numbers as timm's ``drop_path`` (``x.new_empty(shape).bernoulli_(keep)``
divided by keep): one Bernoulli per sample, broadcast over the other dims.
"""

from __future__ import annotations

import torch
from torch import nn

from .bernoulli_mask import BernoulliMask
from .mask_type import apply_mask
from .options import MaskStorage, check_floating, check_p


def _per_sample(x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def drop_path(
    x: torch.Tensor,
    p: float = 0.0,
    training: bool = False,
    *,
    bits: int = 1,
    unpack: str = "lazy",
    storage: str = "packed",
    sampler: str = "exact",
) -> torch.Tensor:
    """Zero each sample of `x` (dim 0) with probability p, scale the rest by 1 / (1 - p).

    Args:
        x: (B, ...) float tensor, e.g. a residual branch's output (B, S, D).
        p: drop probability; `training`: apply it (False returns `x` itself).

    Example:
        >>> y = drop_path(torch.randn(8, 197, 768), 0.1, training=True)
    """
    return drop_path_with(
        MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler), x, p, training
    )


def drop_path_with(
    options: MaskStorage, x: torch.Tensor, p: float = 0.0, training: bool = False
) -> torch.Tensor:
    """`drop_path` with the mask's options as one `MaskStorage` (what `DropPath` calls).

    Example:
        >>> y = drop_path_with(MaskStorage(storage="seeded"), torch.randn(8, 197, 768), 0.1, training=True)
    """
    p = check_p(p, "drop path")
    check_floating(x, "input")
    if not training or p == 0.0 or x.dim() == 0:
        return x
    return apply_mask(BernoulliMask(p, shape_of=_per_sample), x, storage=options)


class DropPath(nn.Module):
    """Stochastic depth per sample (timm's DropPath), its (B,) mask saved at `bits` bits.

    Example:
        >>> block_out = x + DropPath(0.1)(branch(x))
    """

    def __init__(
        self,
        p: float = 0.0,
        *,
        bits: int = 1,
        unpack: str = "lazy",
        storage: str = "packed",
        sampler: str = "exact",
    ) -> None:
        super().__init__()
        self.p = check_p(p, "drop path")
        self.options = MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler)

    @classmethod
    def from_options(cls, options: MaskStorage, p: float = 0.0) -> DropPath:
        """A DropPath keeping its mask as `options` says (what integrations pass whole).

        Example:
            >>> drop = DropPath.from_options(MaskStorage(storage="seeded"), 0.1)
        """
        module = cls(p)
        module.options = options
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path_with(self.options, x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, {self.options.describe()}"
