"""`TopKRouter`: a linear top-k router whose token-to-expert dispatch mask is a PackedBool.

The router scores each token against each expert (softmax over experts), keeps the k best, and
renormalizes their weights (Mixtral-style; ``normalize=False`` keeps the raw softmax weights,
Switch-style). The choice itself is a (tokens, experts) bool mask: it is returned packed and is
also the only thing the weight selection saves for backward (1 bit per token-expert pair).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from bittensor_core import Mask, PackedBool
from bittensor_core.errors import PackedBoolValueError

from .bernoulli_mask import BernoulliMask
from .mask_type import apply_mask
from .options import MaskStorage, check_count, check_floating


class RouterOutput(NamedTuple):
    """What a router returns, for T tokens and E experts.

    Attributes:
        mask: (T, E) PackedBool (a `layers.mask.Mask` under torch.compile), True where a token goes
            to an expert (k per row).
        weights: (T, E) float, the combine weight of each chosen expert, 0 elsewhere.
        logits: (T, E) router scores before the softmax (for auxiliary losses).
    """

    mask: PackedBool
    weights: torch.Tensor
    logits: torch.Tensor


def check_experts(num_experts: int, top_k: int) -> tuple[int, int]:
    num_experts, top_k = check_count("num_experts", num_experts), check_count("top_k", top_k)
    if top_k > num_experts:
        raise PackedBoolValueError(f"top_k={top_k!r} must be <= num_experts={num_experts}.")
    return num_experts, top_k


def top_k_mask(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """(T, E) bool mask of each row's top_k scores (ties: torch.topk's choice)."""
    idx = scores.detach().topk(top_k, dim=-1).indices
    return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter_(-1, idx, True)


class TopKRouter(nn.Module):
    """Route each token of (..., hidden_size) to `top_k` of `num_experts` experts.

    Args:
        hidden_size, num_experts, top_k: sizes (1 <= top_k <= num_experts).
        bits: width of the saved dispatch mask.
        normalize: renormalize the k chosen weights to sum to 1.

    Returns (forward): `RouterOutput` for the T = prod(leading dims) tokens.

    Example:
        >>> router = TopKRouter(64, num_experts=8, top_k=2)
        >>> out = router(torch.randn(4, 16, 64))
        >>> out.mask.shape, out.mask.packed_nbytes      # (64, 8): 64 bytes at 1 bit
        (torch.Size([64, 8]), 64)
    """

    def __init__(
        self, hidden_size: int, num_experts: int, top_k: int, *, bits: int = 1, normalize: bool = True
    ) -> None:
        super().__init__()
        self.num_experts, self.top_k = check_experts(num_experts, top_k)
        self.normalize = normalize
        self.options = MaskStorage(bits=bits)
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        return RouterOutput(*self.route(x))

    def route(self, x: torch.Tensor) -> tuple[PackedBool | Mask, torch.Tensor, torch.Tensor]:
        """`forward` as a tuple (mask, weights, logits)."""
        check_floating(x, "input")
        if x.dim() == 0 or x.shape[-1] != self.gate.in_features:
            raise PackedBoolValueError(
                f"TopKRouter expects (..., hidden_size={self.gate.in_features}), got shape {tuple(x.shape)}."
            )
        logits = self.gate(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]))  # not -1: T may be 0
        probs = torch.softmax(logits, dim=-1)
        mask = self.options.mask(top_k_mask(probs, self.top_k))
        # probs * mask, with the mask saved at `bits` bits instead of a byte (or a float) per pair.
        weights = apply_mask(BernoulliMask(0.0), probs, mask=mask, storage=self.options)
        if self.normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return mask.public(), weights, logits

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.gate.in_features}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"normalize={self.normalize}, bits={self.options.bits}"
        )
