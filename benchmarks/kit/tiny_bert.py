"""The suite's small BERT training case: TinyBERT's shape (4 layers, hidden 312, 12 heads,
intermediate 1200, vocab 30522), random weights, stepped at seq `SEQ_LEN` and batch `BATCH`
(`BATCH_WHEN_DISABLED` under ``--benchmark-disable``, where the suite runs once as a test).
"""

from __future__ import annotations

import torch

__all__ = ["BATCH", "BATCH_WHEN_DISABLED", "DEVICE", "SEQ_LEN", "tiny_bert"]

SEQ_LEN = 128
BATCH = 32
BATCH_WHEN_DISABLED = 4
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def tiny_bert() -> torch.nn.Module:
    """The model, seeded (0), in training mode on `DEVICE`."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30522,
        hidden_size=312,
        num_hidden_layers=4,
        num_attention_heads=12,
        intermediate_size=1200,
        max_position_embeddings=512,
        num_labels=2,
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config).to(DEVICE).train()
