"""MoE expert dispatch with a packed routing mask, through transformers' ``ExpertsInterface``.

transformers' MoE blocks (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek, GPT-OSS, ...) call the experts
module as ``experts(hidden_states (T, H), top_k_index (T, k), top_k_weights (T, k))`` and its
forward looks up the function registered for ``config._experts_implementation``. The default,
``grouped_mm``, keeps three int64 index tensors of T * k entries for backward (24 bytes per routed
pair). `packed_experts_forward` runs the same computation (`layers.moe.grouped_experts`: the same
ops in the same order, so results are bit-identical to stock ``grouped_mm``) and keeps instead the
expert ids as a packed mask of ``bit_length(num_experts)`` bits per pair (`layers.moe.ExpertBits`).
It compiles with ``fullgraph=True`` (docs/compile.md).

Example:
    >>> name = register_experts(MaskStorage(bits=1))
    >>> model.set_experts_implementation(name)
"""

from __future__ import annotations

from dataclasses import replace

import torch

from layers import MaskStorage
from layers.moe import ExpertBits, grouped_experts

from .hf_registry import DEFAULT, register


def register_experts(options: MaskStorage = DEFAULT) -> str:
    """Register `packed_experts_forward` for `options` with ``ExpertsInterface``; return its name."""
    from transformers.integrations.moe import ExpertsInterface

    # Routing masks are given, never sampled: only the width and unpack mode matter (one name for all).
    given = replace(options, storage=DEFAULT.storage, sampler=DEFAULT.sampler)
    return register(ExpertsInterface, given, packed_experts_forward)


def packed_experts_forward(
    self: torch.nn.Module,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    *,
    options: MaskStorage = DEFAULT,
) -> torch.Tensor:
    """The experts of a transformers experts module, routed through a packed mask.

    Args:
        self: the experts module (weights ``gate_up_proj`` / ``up_proj``, ``down_proj``, optional
            biases, and the flags ``has_gate``, ``has_bias``, ``is_transposed`` that transformers'
            ``use_experts_implementation`` sets).
        hidden_states: (T, H) tokens.
        top_k_index: (T, k) chosen experts; ids >= num_experts (expert-parallel sentinels) add nothing.
        top_k_weights: (T, k) routing weights.

    Returns:
        (T, H): sum over each token's experts of weight * expert(token).
    """
    code = ExpertBits(self.num_experts, top_k_index.shape[-1])
    routing = options.mask(code.encode(top_k_index))
    return grouped_experts(self, hidden_states, top_k_weights, routing, code, options)
