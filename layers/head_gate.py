"""`HeadGate`: a per-(batch, head) binary gate on attention heads, stored packed.

Stochastic (DropHead-style: each head of each sample dropped with probability p, the rest scaled
by 1 / (1 - p)) and/or fixed (a pruning head mask, no rescaling). Applied to (B, H, S, D), e.g. the
per-head attention output before the heads are merged.
"""

from __future__ import annotations

import torch
from torch import nn

from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError

from .bernoulli_mask import BernoulliMask
from .mask_type import apply_mask
from .options import MaskStorage, check_count, check_floating, check_p


class HeadGate(nn.Module):
    """Gate heads of a (B, H, S, D) tensor with a (B, H) mask saved at `bits` bits per head.

    Args:
        num_heads: H; inputs with another head count raise an error.
        p: probability of dropping a head per sample in training (0 = no stochastic gate).
        head_mask: optional fixed mask of shape (H,) or (B, H), bool or 0/1 float (True / 1 = keep),
            applied in training and eval alike, without rescaling.
        bits, unpack: how the mask is kept (`MaskStorage`).

    Example:
        >>> gate = HeadGate(12, p=0.1)
        >>> y = gate(torch.randn(8, 12, 128, 64))      # whole heads zeroed per sample
        >>> pruned = HeadGate(12, head_mask=torch.arange(12) < 10)   # keep heads 0..9
    """

    def __init__(
        self,
        num_heads: int,
        p: float = 0.0,
        *,
        head_mask: torch.Tensor | None = None,
        bits: int = 1,
        unpack: str = "lazy",
        storage: str = "packed",
        sampler: str = "exact",
    ) -> None:
        super().__init__()
        self.num_heads, self.p = check_count("num_heads", num_heads), check_p(p, "head drop")
        self.options = MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler)
        self.register_buffer("head_mask", None if head_mask is None else self._check_head_mask(head_mask))

    @classmethod
    def from_options(
        cls, options: MaskStorage, num_heads: int, p: float = 0.0, *, head_mask: torch.Tensor | None = None
    ) -> HeadGate:
        """A HeadGate keeping its mask as `options` says (what integrations pass whole).

        Example:
            >>> gate = HeadGate.from_options(MaskStorage(bits=2), 12, p=0.1)
        """
        module = cls(num_heads, p, head_mask=head_mask)
        module.options = options
        return module

    def _check_head_mask(self, head_mask: torch.Tensor) -> torch.Tensor:
        if head_mask.dtype != torch.bool and not head_mask.is_floating_point():
            raise PackedBoolTypeError(f"head_mask must be bool or 0/1 float, got dtype={head_mask.dtype}.")
        if head_mask.dim() not in (1, 2) or head_mask.shape[-1] != self.num_heads:
            raise PackedBoolValueError(
                f"head_mask must have shape (num_heads={self.num_heads},) or (batch, {self.num_heads}), "
                f"got {tuple(head_mask.shape)}."
            )
        if head_mask.dtype != torch.bool and not bool(((head_mask == 0) | (head_mask == 1)).all()):
            raise PackedBoolValueError("head_mask must hold only 0 and 1 (a gate, not a weight).")
        return head_mask.bool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_floating(x, "input")
        if x.dim() != 4 or x.shape[1] != self.num_heads:
            raise PackedBoolValueError(
                f"HeadGate(num_heads={self.num_heads}) expects (batch, {self.num_heads}, seq, head_dim), "
                f"got shape {tuple(x.shape)}."
            )
        fixed = (
            None
            if self.head_mask is None
            else self.head_mask.expand(x.shape[0], self.num_heads)[..., None, None]
        )
        stochastic = self.training and self.p > 0.0
        if not stochastic and fixed is None:
            return x
        if stochastic:
            gate = BernoulliMask(self.p, shape_of=_per_head, keep_only=fixed)
            return apply_mask(gate, x, storage=self.options)
        return apply_mask(BernoulliMask(0.0, shape_of=_per_head), x, mask=fixed, storage=self.options)

    def extra_repr(self) -> str:
        fixed = "" if self.head_mask is None else f", head_mask={tuple(self.head_mask.shape)}"
        return f"num_heads={self.num_heads}, p={self.p}{fixed}, {self.options.describe()}"


def _per_head(x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0], x.shape[1], 1, 1)
