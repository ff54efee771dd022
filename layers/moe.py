"""`PackedMoE`: a reference sparse mixture-of-experts layer that keeps routing as a 1-bit mask.

Tokens are gathered expert by expert (expert-major, tokens ascending) from the router's (T, E)
dispatch mask, each expert MLP runs on its tokens only, and the outputs are scattered back,
weighted. Gather and scatter are two mask types on the generic Function: they save the dispatch
mask packed and recompute the token indices from it in backward, instead of keeping int64 index
tensors (8 bytes per routed token) or a GShard-style float dispatch tensor (T x E x capacity).
"""

from __future__ import annotations

import torch
from torch import nn

from .mask import plain
from .mask_type import MaskType, apply_mask
from .options import MaskStorage
from .router import RouterOutput, TopKRouter


def routed_pairs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert_idx, token_idx) of every True in a (T, E) mask, expert-major (tokens ascending)."""
    expert_idx, token_idx = plain(mask).t().nonzero(as_tuple=True)
    return expert_idx, token_idx


class DispatchMask(MaskType):
    """Mask type: x (T, H) -> the routed tokens, expert-major, (N, H) with N = mask.sum()."""

    def apply(self, mask: torch.Tensor, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return x.index_select(0, routed_pairs(mask)[1])

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor]:
        token_idx = routed_pairs(mask)[1]
        grad_x = grad_out.new_zeros(mask.shape[0], grad_out.shape[-1])
        return (grad_x.index_add_(0, token_idx, grad_out),)


class CombineMask(MaskType):
    """Mask type: (expert outputs (N, H), weights (T, E)) -> y (T, H) = sum of weighted outputs."""

    def apply(self, mask: torch.Tensor, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        (weights,) = others
        expert_idx, token_idx = routed_pairs(mask)
        weighted = x * weights[token_idx, expert_idx].unsqueeze(-1)
        return x.new_zeros(mask.shape[0], x.shape[-1]).index_add_(0, token_idx, weighted)

    def save(self, x: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x, *others)

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs, weights = saved
        expert_idx, token_idx = routed_pairs(mask)
        grad_routed = grad_out.index_select(0, token_idx)  # (N, H)
        grad_outputs = grad_routed * weights[token_idx, expert_idx].unsqueeze(-1)
        grad_weights = torch.zeros_like(weights).index_put_((token_idx, expert_idx), (grad_routed * outputs).sum(-1))
        return grad_outputs, grad_weights


class ExpertMLP(nn.Sequential):
    """One expert: Linear(hidden, ffn) -> GELU -> Linear(ffn, hidden)."""

    def __init__(self, hidden_size: int, ffn_size: int) -> None:
        super().__init__(nn.Linear(hidden_size, ffn_size), nn.GELU(), nn.Linear(ffn_size, hidden_size))


class PackedMoE(nn.Module):
    """Sparse MoE: `TopKRouter` + `num_experts` MLPs, routing kept as a (T, E) PackedBool.

    Args:
        hidden_size, ffn_size: expert MLP sizes.
        num_experts, top_k: each token goes to its top_k experts (1 <= top_k <= num_experts).
        bits: width of the saved dispatch mask.

    Shape: (..., hidden_size) -> same shape. ``self.last_routing`` holds the latest `RouterOutput`
    (for load-balancing losses).

    Example:
        >>> moe = PackedMoE(64, 128, num_experts=8, top_k=2)
        >>> y = moe(torch.randn(4, 16, 64))
    """

    def __init__(self, hidden_size: int, ffn_size: int, num_experts: int, top_k: int, *, bits: int = 1) -> None:
        super().__init__()
        self.router = TopKRouter(hidden_size, num_experts, top_k, bits=bits)
        self.experts = nn.ModuleList(ExpertMLP(hidden_size, ffn_size) for _ in range(num_experts))
        self.options = MaskStorage(bits=bits)
        self.last_routing: RouterOutput | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.router(x)
        self.last_routing = routing
        mask, weights = routing.mask, routing.weights
        tokens = x.reshape(mask.shape[0], x.shape[-1])
        routed = apply_mask(DispatchMask(), tokens, mask=mask, storage=self.options)
        counts = mask.unpack().sum(0).tolist()
        outputs = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, routed.split(counts), strict=True)])
        y = apply_mask(CombineMask(), outputs, weights, mask=mask, storage=self.options)
        return y.reshape(x.shape)
