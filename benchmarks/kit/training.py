"""Fine-tuning pieces shared by the experiments: data as fixed-length tensors, one training
step, evaluation (accuracy, F1), the flat gradient, a seeded head re-initialisation.

Example:
    >>> model, tokenizer = load_model("all-MiniLM-L6-v2")
    >>> train, val, test = load_data(tokenizer, "rotten-tomatoes-vader", seq_len=64, train_limit=256, val_limit=64)
    >>> loss = train_step(model, torch.optim.AdamW(model.parameters()), train.batch(range(16)))
    >>> evaluate(model, val)["accuracy"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "Examples",
    "evaluate",
    "flat_grad",
    "load_data",
    "load_digits",
    "load_model",
    "model_from_config",
    "random_batch",
    "reset_head",
    "train_step",
]


@dataclass
class Examples:
    """Fixed-size examples: the model's input tensors (each (N, ...)) and labels (N,)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.numel()

    def batch(
        self, index: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """The model's keyword arguments (labels included) for the examples at `index`."""
        index = torch.as_tensor(index, dtype=torch.long)
        out = {name: value[index].to(device) for name, value in self.inputs.items()}
        return out | {"labels": self.labels[index].to(device)}


def load_model(name: str = "all-MiniLM-L6-v2", num_labels: int = 2) -> tuple[nn.Module, object]:
    """(sequence-classification model, tokenizer) via ``benchmarks.kit.sources.load_pretrained``."""
    from transformers.utils import logging

    from benchmarks.kit.sources import load_pretrained

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the "classifier weights newly initialised" load report
    try:
        return load_pretrained(name, num_labels=num_labels)
    finally:
        logging.set_verbosity(verbosity)


def model_from_config(
    name: str = "all-MiniLM-L6-v2", *, max_positions: int = 512, num_labels: int = 2
) -> nn.Module:
    """A randomly initialised sequence classifier with `name`'s architecture (for memory sweeps),
    its position table extended to `max_positions`."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from benchmarks.kit.sources import MINILM_NAMES, minilm_path

    config = AutoConfig.from_pretrained(str(minilm_path()) if name in MINILM_NAMES else name)
    config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    config.num_labels = num_labels
    return AutoModelForSequenceClassification.from_config(config)


def random_batch(
    vocab_size: int, batch: int, seq_len: int, *, seed: int = 0, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Token ids drawn uniformly (no padding) and random binary labels: memory does not depend
    on the content, only on the shapes."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, vocab_size, (batch, seq_len), generator=gen).to(device),
        "attention_mask": torch.ones(batch, seq_len, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (batch,), generator=gen).to(device),
    }


def _tokenize(tokenizer: object, examples: list, seq_len: int) -> Examples:
    texts = [text for text, _ in examples]
    pairs = bool(texts) and isinstance(texts[0], tuple)
    args = ([a for a, _ in texts], [b for _, b in texts]) if pairs else (texts,)
    enc = tokenizer(*args, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return Examples({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, labels)


def load_data(
    tokenizer: object,
    dataset: str,
    *,
    seq_len: int,
    train_limit: int | None,
    val_limit: int | None,
    test_limit: int | None = None,
    held_out: float = 0.1,
    seed: int = 0,
) -> tuple[Examples, Examples, Examples]:
    """(train, val, test) of a text-classification dataset (``sources.load_text_classification``
    names), tokenized to `seq_len`. The split is fixed by `seed`: a `held_out` fraction is set
    aside, its first `val_limit` examples are val and the next `test_limit` test (disjoint);
    `train_limit` caps train.

    Example:
        >>> train, val, test = load_data(tokenizer, "rotten-tomatoes-vader", seq_len=64, train_limit=4000,
        ...                              val_limit=500, test_limit=1000, held_out=0.15)
    """
    from benchmarks.kit.sources import load_text_classification

    train, held = load_text_classification(dataset, seed=seed, val_fraction=held_out, limit=train_limit)
    val = held[:val_limit]
    test = held[len(val) :][:test_limit]
    return tuple(_tokenize(tokenizer, part, seq_len) for part in (train, val, test))


def load_digits(val: int, test: int, seed: int = 0) -> tuple[Examples, Examples, Examples]:
    """(train, val, test) of scikit-learn's 8x8 digits as ``pixel_values`` (N, 1, 8, 8): a fixed
    shuffle by `seed`, the first `test` images test, the next `val` val, the rest train."""
    from benchmarks.kit.sources import digits_images

    images, labels = digits_images()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    parts = (order[test + val :], order[test : test + val], order[:test])
    return tuple(Examples({"pixel_values": images[i]}, labels[i]) for i in parts)


def reset_head(model: nn.Module, seed: int) -> None:
    """Re-draw the freshly initialised classification head from `seed` (transformers' own init)."""
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no 'classifier' or 'score' head to re-initialise.")
    torch.manual_seed(seed)
    for module in head.modules():
        model._init_weights(module)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    on_grad: Callable[[], None] | None = None,
) -> float:
    """Forward, backward, (``on_grad()``,) optimizer step, gradients dropped; returns the loss."""
    loss = model(**batch).loss
    loss.backward()
    if on_grad is not None:
        on_grad()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def flat_grad(model: nn.Module) -> torch.Tensor:
    """All parameter gradients concatenated (zeros where a parameter has none), on the CPU."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().cpu()
            for p in model.parameters()
            if p.requires_grad
        ]
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Examples, batch_size: int = 64, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Accuracy and F1 on `data`, in eval mode: F1 of the positive class (label 1) for two
    classes, macro F1 (mean over classes) for more."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(data), batch_size):
        batch = data.batch(range(start, min(start + batch_size, len(data))), device)
        batch.pop("labels")
        preds.append(model(**batch).logits.argmax(-1).cpu())
    model.train(was_training)
    pred, gold = torch.cat(preds), data.labels
    classes = (1,) if int(gold.max()) <= 1 else range(int(gold.max()) + 1)
    return {
        "accuracy": float((pred == gold).float().mean()),
        "f1": sum(_f1(pred == c, gold == c) for c in classes) / len(classes),
    }


def _f1(pred: torch.Tensor, gold: torch.Tensor) -> float:
    tp, fp, fn = int((pred & gold).sum()), int((pred & ~gold).sum()), int((~pred & gold).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
