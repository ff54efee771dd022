"""layers: nn.Modules and functionals whose binary masks are kept packed for backward.

Dropout, DropPath, head gates and MoE routing are mask types (`MaskType`) run by one generic
autograd Function (`apply_mask`); the fused CUDA dropout (`fused_dropout`) and `packed_attention`
(a checkpointed SDPA core) have their own. `RecomputedActivation` is not a mask: it keeps an
activation's output as a recipe recomputed in backward. See docs/layers.md and docs/mask-types.md.

Exported: the modules and functionals a model calls, and the plug-in interface for new mask types
(`MaskType`, `apply_mask`, `Draw`, `BernoulliMask`, `noise_scale`; docs/mask-types.md). Everything
else is imported from its own module, whose ``__all__`` lists what the project's other packages may
use (``from layers.checkpointing import checkpoint``; tests/test_public_api.py holds every package to
that). The `Mask` a mask type receives is `bittensor_core.Mask`.
"""

from .activation_recompute import RecomputedActivation, recompute_scope
from .attention import packed_attention
from .attention_masks import padding_causal_mask
from .bernoulli_mask import BernoulliMask
from .drop_path import DropPath, drop_path, drop_path_with
from .dropout import PackedDropout, dropout_with, packed_dropout
from .head_gate import HeadGate
from .mask_type import Draw, MaskType, apply_mask
from .moe import PackedMoE
from .noise import noise_scale
from .options import MaskStorage
from .router import TopKRouter

__all__ = [
    "BernoulliMask",
    "Draw",
    "DropPath",
    "HeadGate",
    "MaskStorage",
    "MaskType",
    "PackedDropout",
    "PackedMoE",
    "RecomputedActivation",
    "TopKRouter",
    "apply_mask",
    "drop_path",
    "drop_path_with",
    "dropout_with",
    "noise_scale",
    "packed_attention",
    "packed_dropout",
    "padding_causal_mask",
    "recompute_scope",
]
