"""layers: nn.Modules and functionals whose binary masks are kept packed for backward.

Dropout, DropPath, head gates and MoE routing are mask types (`MaskType`) run by one generic
autograd Function (`apply_mask`); the fused CUDA dropout (`fused_dropout`) and `packed_attention`
(a checkpointed SDPA core) have their own. `RecomputedActivation` is not a mask: it keeps an
activation's output as a recipe recomputed in backward. See docs/layers.md and docs/mask-types.md.
"""

from .activation_recompute import RecomputedActivation, recompute_scope
from .attention import ProbsDropoutMatmul, packed_attention
from .attention_masks import padding_causal_mask
from .bernoulli_mask import BernoulliMask
from .drop_path import DropPath, drop_path, drop_path_with
from .dropout import DropoutMask, PackedDropout, dropout_with, packed_dropout
from .head_gate import HeadGate
from .mask import Mask
from .mask_type import Draw, MaskFunction, MaskType, apply_mask
from .moe import CombineMask, DispatchMask, ExpertMLP, PackedMoE
from .noise import noise_scale, packed_noise
from .options import MaskStorage
from .router import RouterOutput, TopKRouter

__all__ = [
    "BernoulliMask",
    "CombineMask",
    "DispatchMask",
    "Draw",
    "DropPath",
    "DropoutMask",
    "ExpertMLP",
    "HeadGate",
    "Mask",
    "MaskFunction",
    "MaskStorage",
    "MaskType",
    "PackedDropout",
    "PackedMoE",
    "ProbsDropoutMatmul",
    "RecomputedActivation",
    "RouterOutput",
    "TopKRouter",
    "apply_mask",
    "drop_path",
    "drop_path_with",
    "dropout_with",
    "noise_scale",
    "packed_attention",
    "packed_dropout",
    "packed_noise",
    "padding_causal_mask",
    "recompute_scope",
]
