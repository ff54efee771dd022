"""MoE expert dispatch with packed routing masks, through transformers' ``ExpertsInterface``.

transformers' MoE blocks (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek, ...) call the experts module as
``experts(hidden_states (T, H), top_k_index (T, k), top_k_weights (T, k))`` and its forward looks
up the function registered for ``config._experts_implementation``. The eager loop keeps two
int64 index tensors per expert for backward (which tokens, which top-k slot): 16 bytes per
routed (token, slot) pair. `packed_experts_forward` computes the same experts on the same rows
in the same order, but keeps per expert one mask: its (k, T) slot-major choice (``mask[j, t]``:
the expert is token t's j-th choice), at `bits` bits per element, k * T / 8 bytes at 1 bit. The
same PackedBool serves the three routing steps (dispatch the tokens, pick the routing weights,
combine the outputs), so it is stored once. The mask is given (the router's top-k choice), so it
goes through `layers.apply_mask` as a non-sampled mask type.

NOTE: `layers.DispatchMask` / `CombineMask` route all experts at once from a (T, E) mask with
dense (T, E) weights, tokens ascending within an expert. transformers hands over (T, k) indices
and weights and its eager loop visits each expert's rows slot-major; keeping that order keeps the
expert weight gradients bit-identical to transformers' eager experts, hence these three types.

Example:
    >>> name = register_experts(MaskStorage(bits=1))
    >>> model.set_experts_implementation(name)
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch
from torch.nn import functional as F

from bittensor_core import PackedBool
from layers import MaskStorage, MaskType, apply_mask

from .hf_attention import DEFAULT, registry_name


class _SlotMajor(MaskType):
    """Base of the routing mask types. The mask is one expert's (k, T) choice: ``mask[j, t]`` is
    True when the expert is token t's j-th choice. Its True entries, slot-major, are the expert's
    routed pairs in the order transformers' eager loop visits them (``torch.where`` on (k, T))."""

    @staticmethod
    def tokens(mask: torch.Tensor) -> torch.Tensor:
        return mask.unpack().nonzero(as_tuple=True)[1]


class DispatchTokens(_SlotMajor):
    """(T, H) tokens -> (n, H): the rows routed to this expert (each token at most once)."""

    def apply(self, mask: torch.Tensor, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return x[self.tokens(mask)]

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor]:
        grad = grad_out.new_zeros((mask.shape[1], *grad_out.shape[1:]))
        return (grad.index_add_(0, self.tokens(mask), grad_out),)


class CombineTokens(DispatchTokens):
    """(n, H) expert outputs -> (T, H): each row added back at its token, zeros elsewhere."""

    def apply(self, mask: torch.Tensor, y: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        out = y.new_zeros((mask.shape[1], *y.shape[1:]))
        return out.index_add_(0, self.tokens(mask), y)

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor]:
        return (grad_out[self.tokens(mask)],)


class GatherSlots(_SlotMajor):
    """(T, k) routing weights -> (n,): the weight of each routed pair."""

    def apply(self, mask: torch.Tensor, w: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return w.T[mask.unpack()]

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor]:
        grad = grad_out.new_zeros(mask.shape)
        grad[mask.unpack()] = grad_out
        return (grad.T,)


def register_experts(options: MaskStorage = DEFAULT) -> str:
    """Register `packed_experts_forward` for `options` with ``ExpertsInterface``; return its name."""
    from transformers.integrations.moe import ExpertsInterface

    # Routing masks are given, never sampled: only the width and unpack mode matter.
    options = MaskStorage(bits=options.bits, unpack=options.unpack)
    name = registry_name(options)
    ExpertsInterface.register(name, partial(packed_experts_forward, options=options))
    return name


def packed_experts_forward(
    self: torch.nn.Module,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    *,
    options: MaskStorage = DEFAULT,
) -> torch.Tensor:
    """The experts of a transformers experts module, routed through packed masks.

    Args:
        self: the experts module (weights ``gate_up_proj`` / ``up_proj``, ``down_proj``, optional
            biases, and the flags ``has_gate``, ``has_bias``, ``is_transposed`` that transformers'
            ``use_experts_implementation`` sets).
        hidden_states: (T, H) tokens.
        top_k_index: (T, k) chosen experts; ids >= num_experts (expert-parallel sentinels) are skipped.
        top_k_weights: (T, k) routing weights.

    Returns:
        (T, H): sum over each token's experts of weight * expert(token).
    """
    options = replace(options, storage="packed")
    final = torch.zeros_like(hidden_states)
    for expert in torch.unique(top_k_index).tolist():  # ascending, like the eager loop
        if expert >= self.num_experts:
            continue
        choice = PackedBool((top_k_index == expert).T, bits=options.bits, unpack=options.unpack)  # (k, T)
        x = apply_mask(DispatchTokens(), hidden_states, mask=choice, storage=options)
        weight = apply_mask(GatherSlots(), top_k_weights, mask=choice, storage=options)
        y = _expert_mlp(self, x, expert) * weight[:, None]
        final = final + apply_mask(CombineTokens(), y.to(final.dtype), mask=choice, storage=options)
    return final


def _expert_mlp(self: torch.nn.Module, x: torch.Tensor, expert: int) -> torch.Tensor:
    """One expert's (gated) MLP on its tokens, as transformers' experts functions compute it."""
    up = "gate_up_proj" if self.has_gate else "up_proj"
    h = _linear(self, x, up, expert)
    h = self._apply_gate(h) if self.has_gate else self.act_fn(h)
    return _linear(self, h, "down_proj", expert)


def _linear(self: torch.nn.Module, x: torch.Tensor, weight: str, expert: int) -> torch.Tensor:
    w = getattr(self, weight)[expert]
    out = x @ w if self.is_transposed else F.linear(x, w)
    return out + getattr(self, f"{weight}_bias")[expert] if self.has_bias else out
