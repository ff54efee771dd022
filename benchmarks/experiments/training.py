"""Fine-tuning pieces shared by the experiments: data as fixed-length tensors, one training
step, evaluation (accuracy, F1), the flat gradient, a seeded head re-initialisation.

Example:
    >>> model, tokenizer = load_model("all-MiniLM-L6-v2")
    >>> train, val = load_data(tokenizer, "rotten-tomatoes-vader", seq_len=64, train_limit=256)
    >>> loss = train_step(model, torch.optim.AdamW(model.parameters()), train.batch(range(16)))
    >>> evaluate(model, val)["accuracy"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "TextData",
    "evaluate",
    "flat_grad",
    "load_data",
    "load_model",
    "model_from_config",
    "random_batch",
    "reset_head",
    "train_step",
]


@dataclass
class TextData:
    """Tokenized examples padded to one length: input_ids / attention_mask (N, S), labels (N,)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.numel()

    def batch(self, index: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The model's keyword arguments for the examples at `index`."""
        index = torch.as_tensor(index, dtype=torch.long)
        return {
            "input_ids": self.input_ids[index].to(device),
            "attention_mask": self.attention_mask[index].to(device),
            "labels": self.labels[index].to(device),
        }


def load_model(name: str = "all-MiniLM-L6-v2", num_labels: int = 2) -> tuple[nn.Module, object]:
    """(sequence-classification model, tokenizer) via ``integrations.sources.load_pretrained``."""
    from transformers.utils import logging

    from integrations.sources import load_pretrained

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the "classifier weights newly initialised" load report
    try:
        return load_pretrained(name, num_labels=num_labels)
    finally:
        logging.set_verbosity(verbosity)


def model_from_config(name: str = "all-MiniLM-L6-v2", *, max_positions: int = 512, num_labels: int = 2) -> nn.Module:
    """A randomly initialised sequence classifier with `name`'s architecture (for memory sweeps),
    its position table extended to `max_positions`."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from integrations.sources import MINILM_NAMES, minilm_path

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


def _tokenize(tokenizer: object, examples: list, seq_len: int) -> TextData:
    texts = [text for text, _ in examples]
    pairs = bool(texts) and isinstance(texts[0], tuple)
    args = ([a for a, _ in texts], [b for _, b in texts]) if pairs else (texts,)
    enc = tokenizer(*args, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return TextData(enc["input_ids"], enc["attention_mask"], labels)


def load_data(
    tokenizer: object, dataset: str, *, seq_len: int, train_limit: int | None, val_limit: int | None,
    seed: int = 0,
) -> tuple[TextData, TextData]:
    """(train, val) of a text-classification dataset (``sources.load_text_classification`` names),
    tokenized to `seq_len`; the split is fixed by `seed`, `train_limit` / `val_limit` cap each side."""
    from integrations.sources import load_text_classification

    train, val = load_text_classification(dataset, seed=seed, limit=train_limit)
    return _tokenize(tokenizer, train, seq_len), _tokenize(tokenizer, val[:val_limit], seq_len)


def reset_head(model: nn.Module, seed: int) -> None:
    """Re-draw the freshly initialised classification head from `seed` (transformers' own init)."""
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no 'classifier' or 'score' head to re-initialise.")
    torch.manual_seed(seed)
    for module in head.modules():
        model._init_weights(module)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
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
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().cpu()
        for p in model.parameters() if p.requires_grad
    ])


@torch.no_grad()
def evaluate(model: nn.Module, data: TextData, batch_size: int = 64, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy and F1 of the positive class (label 1) on `data`, in eval mode."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(data), batch_size):
        batch = data.batch(range(start, min(start + batch_size, len(data))), device)
        batch.pop("labels")
        preds.append(model(**batch).logits.argmax(-1).cpu())
    model.train(was_training)
    pred, gold = torch.cat(preds), data.labels
    tp = int(((pred == 1) & (gold == 1)).sum())
    fp = int(((pred == 1) & (gold == 0)).sum())
    fn = int(((pred == 0) & (gold == 1)).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"accuracy": float((pred == gold).float().mean()), "f1": f1}
