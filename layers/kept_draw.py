"""`kept_draw`: under torch.compile, a mask's packed bytes are kept for backward, never redrawn there.

With ``torch._functorch.config.activation_memory_budget < 1`` AOTAutograd's partitioner may move
forward ops into backward to keep less, random draws included; a draw recomputed there takes fresh
numbers (pytorch issue 190758), so backward would apply another mask than forward did. While
compiling, a sampled mask is drawn and packed inside a selective checkpoint whose policy marks the
packed bytes MUST_SAVE: the partitioner keeps them (1 bit per element) and runs the draw once, in
forward, at any budget above 0. Eager mode calls the draw directly (nothing is recomputed there).
See docs/compile.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from bittensor_core.tracing import tracing

from .checkpointing import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

# The region's last op, on the packed bytes only: uint8 abs is the identity and packing never uses
# it. Only its output is MUST_SAVE: the partitioner saves every MUST_SAVE node ("aot_eager" keeps
# them whether backward reads them or not), and the bool draw or the buffer it fills must not be.
_MARK = torch.ops.aten.abs.default


def _policy(ctx: object, op: object, *args: object, **kwargs: object) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op is _MARK else CheckpointPolicy.PREFER_SAVE


_KEEP_BYTES = functools.partial(create_selective_checkpoint_contexts, _policy)


def kept_draw(draw: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """``draw(like)``: packed uint8 mask bytes drawn for `like` (whose values it must not read).

    Example:
        >>> keep = kept_draw(lambda q: draw_packed("exact", None, shape, 0.9, q), query)
    """
    if not tracing():
        return draw(like)
    return checkpoint(lambda t: torch.abs(draw(t)), like.detach(), context_fn=_KEEP_BYTES)
