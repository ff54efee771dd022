"""What exp-1 trains: a model, its fixed data split and the weights each seed's runs start from.

- ``text``: a pretrained sentence classifier (default all-MiniLM-L6-v2) fine-tuned on a text
  dataset (default the Rotten Tomatoes sentences); a seed re-draws the classification head.
- ``image``: a small ViT (`benchmarks.kit.tiny_vit.VIT`: 8x8 images, patch 2, hidden 64, 4 layers,
  dropout 0.1 on hidden states and attention) trained from scratch on scikit-learn's digits; a seed
  draws all its weights. It shows the result is not BERT-only.

Each task takes a `TaskSpec` (how it is trained and evaluated); the text task also a `TextSource`
(which model on which data); `Exp1Settings` makes both from its fields.

Example:
    >>> s = Exp1Settings.quick()
    >>> task = text_task(s.task_spec("text"), s.text_source())
    >>> task.start(0)                        # seed 0's starting weights, on task.model
    >>> task.model(**task.train.batch(range(4))).loss
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from benchmarks.kit.tiny_vit import VIT
from benchmarks.kit.training import Examples, load_data, load_digits, load_model, reset_head

__all__ = ["Task", "TaskSpec", "TextSource", "image_task", "text_task"]

# The digits split (1,797 images): test and val sizes, the rest (1,297) trains.
DIGITS_TEST, DIGITS_VAL = 300, 200


@dataclass(frozen=True)
class TaskSpec:
    """How a task is trained (`batch_size`, AdamW `lr`, `epochs` passes over train or, when set,
    exactly `steps`) and evaluated (at `val_points` points, `eval_batch` at a time; the first
    `warmup` steps untimed), with which baseline attention implementation, on which device."""

    batch_size: int
    epochs: float
    steps: int | None
    lr: float
    val_points: int
    warmup: int
    eval_batch: int
    baseline_attn: str
    device: str

    def steps_on(self, train: Examples) -> int:
        """`steps` when set, else `epochs` passes over `train` (the last partial batch wraps around)."""
        return (
            self.steps
            if self.steps is not None
            else max(1, round(self.epochs * len(train) / self.batch_size))
        )


@dataclass(frozen=True)
class TextSource:
    """Which pretrained `model` is fine-tuned on which `dataset`, tokenized to `seq_len`, and its
    fixed split: a `held_out` fraction set aside, of which `val_limit` then `test_limit`
    examples; `train_limit` caps train (`training.load_data`)."""

    model: str
    dataset: str
    seq_len: int
    train_limit: int | None
    val_limit: int | None
    test_limit: int | None
    held_out: float


@dataclass
class Task:
    """One model on one data split, trained `steps` steps as `spec` says.

    `config` lists everything a run's result depends on besides variation and seed (it is hashed
    to decide whether a run on disk can be reused); `start(seed)` loads that seed's initial weights.
    """

    name: str
    model: nn.Module
    train: Examples
    val: Examples
    test: Examples
    spec: TaskSpec
    steps: int
    start: Callable[[int], None]
    config: dict[str, Any]

    @property
    def eval_every(self) -> int:
        """Steps between two validation points."""
        return max(1, self.steps // self.spec.val_points)


def _spec_config(spec: TaskSpec, steps: int) -> dict[str, Any]:
    """What of `spec` a run depends on, with the steps it resolves to."""
    names = ("batch_size", "epochs", "lr", "val_points", "warmup", "eval_batch", "baseline_attn", "device")
    return {name: getattr(spec, name) for name in names} | {"steps": steps}


def text_task(spec: TaskSpec, source: TextSource) -> Task:
    """`source.model` fine-tuned on `source.dataset`, on its fixed split."""
    model, tokenizer = load_model(source.model)
    model.set_attn_implementation(spec.baseline_attn)
    model.to(spec.device)
    train, val, test = load_data(
        tokenizer,
        source.dataset,
        seq_len=source.seq_len,
        train_limit=source.train_limit,
        val_limit=source.val_limit,
        test_limit=source.test_limit,
        held_out=source.held_out,
    )
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def start(seed: int) -> None:
        model.load_state_dict(pretrained)
        reset_head(model, seed)

    steps = spec.steps_on(train)
    config = asdict(source) | _spec_config(spec, steps)
    return Task("text", model, train, val, test, spec, steps, start, config)


def image_task(spec: TaskSpec) -> Task:
    """A ViT (`VIT`) trained from scratch on the digits."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(**VIT)
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    model.set_attn_implementation(spec.baseline_attn)
    model.to(spec.device)
    train, val, test = load_digits(DIGITS_VAL, DIGITS_TEST)

    def start(seed: int) -> None:
        torch.manual_seed(seed)
        model.load_state_dict(ViTForImageClassification(config).state_dict())

    steps = spec.steps_on(train)
    run_config = {"vit": VIT, "digits_val": DIGITS_VAL, "digits_test": DIGITS_TEST} | _spec_config(
        spec, steps
    )
    return Task("image", model, train, val, test, spec, steps, start, run_config)
