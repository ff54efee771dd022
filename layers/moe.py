"""Sparse mixture of experts with the routing kept as a packed mask: `grouped_experts`, `PackedMoE`.

`grouped_experts` is transformers' ``grouped_mm`` experts function (its default experts
implementation) with the routing kept packed. Each token's k (token, slot) pairs are sorted by
expert (``torch.sort``), every expert's MLP runs on its rows through `grouped_linear` (per-expert
matmuls on one (T * k, H) tensor, sizes fixed by T and k), and the rows are weighted and summed
back per token. transformers keeps three int64 index tensors of T * k entries for that backward
(the token of each sorted row, the sort order and its inverse: 24 bytes per routed pair); here the
two routing steps (`DispatchMask`: tokens -> sorted rows, `CombineMask`: weighted rows -> tokens)
are mask types that save one packed routing mask and recompute the order from it in backward.
No Python loop over the experts present, no ``.tolist()``: it compiles with ``fullgraph=True``.

NOTE (exactness): the ops, their order and their layouts are those of transformers'
``grouped_mm_experts_forward``, so a patched model's losses and gradients are bit-identical to
the stock model running ``experts_implementation="grouped_mm"`` (transformers' default).

A `RoutingCode` says how the mask stores each token's k experts: `ExpertBits` (the expert id of
each pair in ``bit_length(E)`` bits; transformers hands over (T, k) ids) or `Membership` (the
router's (T, E) mask, k Trues per row; `PackedMoE`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from bittensor_core import Mask, plain_bool

from .grouped_mm import grouped_linear
from .mask_type import MaskType, apply_mask
from .options import MaskStorage
from .router import RouterOutput, TopKRouter

__all__ = ["ExpertBits", "PackedMoE", "grouped_experts"]


class RoutingCode(ABC):
    """How a routing mask stores the (T, k) expert ids of T tokens' k (token, slot) pairs.

    Ids >= ``num_experts`` (transformers' expert-parallel sentinels: "expert on another rank")
    read back as ``num_experts``. ``per_expert_weights``: the routing weights come as (T, E),
    weight of every expert (0 where not chosen), instead of (T, k), one per slot.
    """

    per_expert_weights = False

    def __init__(self, num_experts: int, top_k: int) -> None:
        self.num_experts, self.top_k = num_experts, top_k

    @abstractmethod
    def experts(self, mask: torch.Tensor | Mask) -> torch.Tensor:
        """(T, k) int64 expert ids from the mask (slot order)."""

    def order(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted expert ids, sort order) of the T * k pairs, flattened token-major."""
        return torch.sort(ids.reshape(-1))  # transformers' call: the same (unstable) order


class ExpertBits(RoutingCode):
    """The expert id of each pair in P = ``num_experts.bit_length()`` bits: a (T, R) bool mask,
    bit b of pair j's id at column j * P + b, rows padded with zeros to R = whole bytes (so the
    saved rows are shared as they are). k * P bits per token instead of 3 int64 per pair.

    Example:
        >>> code = ExpertBits(num_experts=8, top_k=2)               # 4 bits per pair
        >>> ids = torch.tensor([[3, 7], [0, 8]])                     # 8: no expert here
        >>> torch.equal(code.experts(code.encode(ids)), ids)
        True
    """

    def __init__(self, num_experts: int, top_k: int) -> None:
        super().__init__(num_experts, top_k)
        self.planes = num_experts.bit_length()  # ids 0 .. num_experts
        self.width = -(-top_k * self.planes // 8) * 8

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """(T, k) ids -> (T, R) bool mask."""
        shifts = torch.arange(self.planes, device=ids.device)
        bits = (ids.clamp(max=self.num_experts).unsqueeze(-1) >> shifts & 1).bool().reshape(ids.shape[0], -1)
        return torch.cat([bits, bits.new_zeros(ids.shape[0], self.width - bits.shape[1])], dim=1)

    def experts(self, mask: torch.Tensor | Mask) -> torch.Tensor:
        bits = plain_bool(mask)[:, : self.top_k * self.planes].reshape(-1, self.top_k, self.planes)
        return (bits.long() << torch.arange(self.planes, device=bits.device)).sum(-1)


class Membership(RoutingCode):
    """The router's (T, E) mask, True at each token's k experts; slot j is its j-th expert, ascending.

    Example:
        >>> Membership(4, 2).experts(torch.tensor([[False, True, False, True]]))
        tensor([[1, 3]])
    """

    per_expert_weights = True

    def experts(self, mask: torch.Tensor | Mask) -> torch.Tensor:
        chosen = plain_bool(mask).to(torch.uint8)
        return chosen.sort(dim=-1, descending=True, stable=True).indices[:, : self.top_k]


class _Routed(MaskType):
    """Base of the two routing steps. The routing (ids, order) computed once in forward may be
    passed after the inputs; backward always recomputes it from the saved mask."""

    def __init__(self, code: RoutingCode) -> None:
        self.code = code

    def routing(self, mask: Mask, given: tuple[torch.Tensor, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        if given:
            return given
        ids = self.code.experts(mask)
        return ids, self.code.order(ids)[1]


class DispatchMask(_Routed):
    """Mask type: tokens (T, H) -> their T * k routed rows sorted by expert, (T * k, H).

    Example:
        >>> route = torch.tensor([[True, False, True], [False, True, True]])   # 2 tokens, 3 experts
        >>> apply_mask(DispatchMask(Membership(3, 2)), torch.randn(2, 4), mask=route).shape
        torch.Size([4, 4])
    """

    def apply(self, mask: Mask, x: torch.Tensor, *order: torch.Tensor) -> torch.Tensor:
        # only the order is passed: with (ids, order), dynamo 2.13 takes MaskFunction.forward's
        # arguments for a ctx-less signature when no input needs grad, and shifts them
        (order,) = order or self.routing(mask)[1:]
        return x[order // self.code.top_k]

    def grad(
        self, mask: Mask, grad_out: torch.Tensor, *saved: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        ids, order = self.routing(mask)
        grad = grad_out.new_zeros(ids.shape[0], *grad_out.shape[1:])
        return (grad.index_put_((order // self.code.top_k,), grad_out, accumulate=True), None)


class CombineMask(_Routed):
    """Mask type: (expert rows (T * k, H), routing weights) -> (T, H), each token's weighted rows summed.

    The weights are (T, k) per slot, or (T, E) per expert when ``code.per_expert_weights``.
    """

    def apply(
        self, mask: Mask, y: torch.Tensor, weights: torch.Tensor, *routing: torch.Tensor
    ) -> torch.Tensor:
        ids, order = self.routing(mask, routing)
        weighted = y * self._slot_weights(weights, ids).reshape(-1)[order].unsqueeze(-1)
        # back to pair order by the inverse permutation (transformers builds it with index_put, the same ints)
        return weighted[order.argsort()].view(*ids.shape, y.shape[-1]).sum(dim=1)

    def save(
        self, y: torch.Tensor, weights: torch.Tensor, *routing: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return (y, weights)

    def grad(
        self, mask: Mask, grad_out: torch.Tensor, *saved: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        y, weights = saved
        ids, order = self.routing(mask)
        # autograd's backward of apply's ops, op for op: sum -> expand, view -> reshape,
        # index -> index_put_ (accumulate), mul -> mul and sum over the broadcast dim
        grad = grad_out.unsqueeze(1).expand(*ids.shape, grad_out.shape[-1]).reshape(y.shape)
        grad_weighted = torch.zeros_like(grad).index_put_((order.argsort(),), grad, accumulate=True)
        slot_weights = self._slot_weights(weights, ids).reshape(-1)
        grad_y = grad_weighted * slot_weights[order].unsqueeze(-1)
        grad_w = (grad_weighted * y).sum(-1, keepdim=True).squeeze(-1)
        grad_slots = (
            torch.zeros_like(slot_weights).index_put_((order,), grad_w, accumulate=True).view(ids.shape)
        )
        if self.code.per_expert_weights:
            grad_slots = torch.zeros_like(weights).scatter_(1, ids, grad_slots)
        return (grad_y, grad_slots, None, None)

    def _slot_weights(self, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return weights.gather(1, ids) if self.code.per_expert_weights else weights


def grouped_experts(
    experts: nn.Module,
    hidden: torch.Tensor,
    weights: torch.Tensor,
    routing: Mask,
    code: RoutingCode,
    storage: MaskStorage,
) -> torch.Tensor:
    """The experts of a routed batch, sorted and grouped, with the routing saved as `routing` only.

    Args:
        experts: a module laid out as transformers' experts modules: ``num_experts``; weights
            ``gate_up_proj`` (``has_gate``) or ``up_proj``, and ``down_proj``, (E, out, in) or
            (E, in, out) with ``is_transposed``; ``*_bias`` (E, out) with ``has_bias``;
            ``_apply_gate`` / ``act_fn``; optional ``post_expert_norm``.
        hidden: (T, H) tokens.
        weights: (T, k) routing weights per slot, or (T, E) with ``code.per_expert_weights``.
        routing: the packed routing mask, read by `code`, at ``storage.bits``.
        code, storage: how `routing` encodes the experts; its width and unpack mode.

    Returns:
        (T, H): sum over each token's experts of weight * expert(token).
    """
    ids = code.experts(routing)  # the one unpack of the forward pass
    sorted_ids, order = code.order(ids)
    num_experts = experts.num_experts
    # transformers' offsets: histc (CPU needs float input), cumulative int32
    counts = torch.histc(
        sorted_ids.float() if hidden.device.type in ("cpu", "mps") else sorted_ids.int(),
        bins=num_experts,
        min=0,
        max=num_experts - 1,
    )
    offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
    x = apply_mask(DispatchMask(code), hidden, order, mask=routing, storage=storage)
    # Expert-parallel sentinels sort last, beyond offs[-1]: the kernel leaves their rows as they
    # are, so they are zeroed, as transformers does when the module is expert-parallel (older
    # versions, without the flag, masked always; on all-False masks that changes no value).
    sentinel = (
        (sorted_ids >= num_experts).unsqueeze(-1) if getattr(experts, "_is_expert_parallel", False) else None
    )
    if sentinel is not None:
        x.masked_fill_(sentinel, 0.0)
    h = _linear(experts, x, "gate_up_proj" if experts.has_gate else "up_proj", offs, sentinel)
    h = experts._apply_gate(h) if experts.has_gate else experts.act_fn(h)
    h = _linear(experts, h, "down_proj", offs, sentinel)
    if getattr(experts, "has_post_expert_norm", False):
        h = experts.post_expert_norm(h)
    out = apply_mask(CombineMask(code), h, weights, ids, order, mask=routing, storage=storage)
    return out.to(hidden.dtype)


def _linear(
    experts: nn.Module, x: torch.Tensor, name: str, offs: torch.Tensor, sentinel: torch.Tensor | None
):
    bias = getattr(experts, f"{name}_bias") if experts.has_bias else None
    out = grouped_linear(x, getattr(experts, name), offs, bias, is_transposed=experts.is_transposed)
    return out if sentinel is None else out.masked_fill(sentinel, 0.0)


class ExpertMLP(nn.Module):
    """`num_experts` MLPs Linear(hidden, ffn) -> GELU -> Linear(ffn, hidden), weights stacked per
    expert in transformers' experts layout: ``up_proj`` (E, ffn, hidden), ``down_proj`` (E, hidden,
    ffn), biases (E, out); each expert initialised as ``nn.Linear``.

    Example:
        >>> ExpertMLP(64, 128, num_experts=8).up_proj.shape
        torch.Size([8, 128, 64])
    """

    has_gate, has_bias, is_transposed, _is_expert_parallel = False, True, False, False

    def __init__(self, hidden_size: int, ffn_size: int, num_experts: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.up_proj, self.up_proj_bias = _linear_params(num_experts, ffn_size, hidden_size)
        self.down_proj, self.down_proj_bias = _linear_params(num_experts, hidden_size, ffn_size)
        self.act_fn = nn.GELU()


def _linear_params(experts: int, out_features: int, in_features: int) -> tuple[nn.Parameter, nn.Parameter]:
    weight, bias = torch.empty(experts, out_features, in_features), torch.empty(experts, out_features)
    bound = 1 / math.sqrt(in_features)
    for w, b in zip(weight, bias, strict=True):
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Linear.reset_parameters
        nn.init.uniform_(b, -bound, bound)
    return nn.Parameter(weight), nn.Parameter(bias)


class PackedMoE(nn.Module):
    """Sparse MoE: `TopKRouter` + `num_experts` MLPs, routing kept as the router's (T, E) PackedBool.

    Args:
        hidden_size, ffn_size: expert MLP sizes.
        num_experts, top_k: each token goes to its top_k experts (1 <= top_k <= num_experts).
        bits: width of the saved routing mask.

    Shape: (..., hidden_size) -> same shape. ``self.last_routing`` holds the latest `RouterOutput`
    (for load-balancing losses). Compiles with ``torch.compile(fullgraph=True)``.

    Example:
        >>> moe = PackedMoE(64, 128, num_experts=8, top_k=2)
        >>> y = moe(torch.randn(4, 16, 64))
    """

    def __init__(
        self, hidden_size: int, ffn_size: int, num_experts: int, top_k: int, *, bits: int = 1
    ) -> None:
        super().__init__()
        self.router = TopKRouter(hidden_size, num_experts, top_k, bits=bits)
        self.experts = ExpertMLP(hidden_size, ffn_size, num_experts)
        self.options = MaskStorage(bits=bits)
        self.last_routing: RouterOutput | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.router(x)
        self.last_routing = routing
        tokens = x.reshape(routing.mask.shape[0], x.shape[-1])
        code = Membership(self.router.num_experts, self.router.top_k)
        mask = self.options.mask(routing.mask)
        y = grouped_experts(self.experts, tokens, routing.weights, mask, code, self.options)
        return y.reshape(x.shape)
