"""The study's image model: a small ViT (8x8 images, patch 2, hidden 64, 4 layers, dropout 0.1), the
size where a fixed per-call cost of the patch shows most (the study trains it on scikit-learn's digits).
"""

from __future__ import annotations

import torch

__all__ = ["VIT", "tiny_vit"]

VIT = dict(
    image_size=8,
    patch_size=2,
    num_channels=1,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    num_labels=10,
)


def tiny_vit() -> torch.nn.Module:
    """`VIT` with transformers' own initialisation, seeded (0), in training mode."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**VIT)).train()
