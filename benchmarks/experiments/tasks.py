"""What exp-1 trains: a model, its fixed data split and the weights each seed's runs start from.

- ``text``: a pretrained sentence classifier (default all-MiniLM-L6-v2) fine-tuned on a text
  dataset (default the Rotten Tomatoes sentences); a seed re-draws the classification head.
- ``image``: a small ViT (transformers ``ViTForImageClassification``: 8x8 images, patch 2, hidden
  64, 4 layers, dropout 0.1 on hidden states and attention) trained from scratch on scikit-learn's
  digits; a seed draws all its weights. It shows the result is not BERT-only.

Example:
    >>> task = text_task(Exp1Settings.quick())
    >>> task.start(0)                        # seed 0's starting weights, on task.model
    >>> task.model(**task.train.batch(range(4))).loss
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from benchmarks.kit.training import Examples, load_data, load_digits, load_model, reset_head

if TYPE_CHECKING:
    from .exp1 import Exp1Settings

__all__ = ["Task", "image_task", "text_task"]

# The digits split (1,797 images): test and val sizes, the rest (1,297) trains.
DIGITS_TEST, DIGITS_VAL = 300, 200
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


@dataclass
class Task:
    """One model on one data split, and how it is trained (`steps` of `batch_size`, AdamW `lr`).

    `config` lists everything a run's result depends on besides variation and seed (it is hashed
    to decide whether a run on disk can be reused); `start(seed)` loads that seed's initial weights.
    """

    name: str
    model: nn.Module
    train: Examples
    val: Examples
    test: Examples
    batch_size: int
    steps: int
    lr: float
    eval_every: int
    start: Callable[[int], None]
    config: dict[str, Any]


def _steps(s: Exp1Settings, epochs: float, batch_size: int, train: Examples) -> int:
    """`s.steps` when set, else `epochs` passes over `train` (the last partial batch wraps around)."""
    return s.steps if s.steps is not None else max(1, round(epochs * len(train) / batch_size))


def text_task(s: Exp1Settings) -> Task:
    """`s.model` fine-tuned on `s.dataset`: fixed split (`held_out`, `val_limit`, `test_limit`)."""
    model, tokenizer = load_model(s.model)
    model.set_attn_implementation(s.baseline_attn)
    model.to(s.device)
    train, val, test = load_data(
        tokenizer,
        s.dataset,
        seq_len=s.seq_len,
        train_limit=s.train_limit,
        val_limit=s.val_limit,
        test_limit=s.test_limit,
        held_out=s.held_out,
    )
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def start(seed: int) -> None:
        model.load_state_dict(pretrained)
        reset_head(model, seed)

    steps = _steps(s, s.epochs, s.batch_size, train)
    config = {
        k: getattr(s, k)
        for k in (
            "model",
            "dataset",
            "seq_len",
            "train_limit",
            "val_limit",
            "test_limit",
            "held_out",
            "epochs",
            "warmup",
            "eval_batch",
            "baseline_attn",
            "device",
        )
    }
    return Task(
        "text",
        model,
        train,
        val,
        test,
        s.batch_size,
        steps,
        s.lr,
        max(1, steps // s.val_points),
        start,
        config | {"batch_size": s.batch_size, "steps": steps, "lr": s.lr, "val_points": s.val_points},
    )


def image_task(s: Exp1Settings) -> Task:
    """A ViT (`VIT`) trained from scratch on the digits for `s.image_epochs` epochs."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(**VIT)
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    model.set_attn_implementation(s.baseline_attn)
    model.to(s.device)
    train, val, test = load_digits(DIGITS_VAL, DIGITS_TEST)

    def start(seed: int) -> None:
        torch.manual_seed(seed)
        model.load_state_dict(ViTForImageClassification(config).state_dict())

    steps = _steps(s, s.image_epochs, s.image_batch, train)
    run_config = {
        "vit": VIT,
        "digits_val": DIGITS_VAL,
        "digits_test": DIGITS_TEST,
        "epochs": s.image_epochs,
        "batch_size": s.image_batch,
        "steps": steps,
        "lr": s.image_lr,
        "val_points": s.val_points,
        "warmup": s.warmup,
        "eval_batch": s.eval_batch,
        "baseline_attn": s.baseline_attn,
        "device": s.device,
    }
    return Task(
        "image",
        model,
        train,
        val,
        test,
        s.image_batch,
        steps,
        s.image_lr,
        max(1, steps // s.val_points),
        start,
        run_config,
    )
