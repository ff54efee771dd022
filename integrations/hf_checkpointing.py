"""Gradient checkpointing of a transformers model under the installed version's names, chosen once.

transformers renamed ``gradient_checkpointing_enable`` / ``_disable``, ``is_gradient_checkpointing``
and the ``TrainingArguments`` flag ``gradient_checkpointing`` to ``activation_checkpointing...``:
on 5.24 the old names raise a ``FutureWarning`` (removal in v6); the 5.14 floor has only the old
names. Code that checkpoints a model (tests, benchmarks) takes the name from here.

Example:
    >>> enable_checkpointing(model, use_reentrant=False)
    >>> getattr(model, f"is_{checkpointing_name()}")
    True
"""

from __future__ import annotations

from torch import nn

__all__ = ["enable_checkpointing"]

NEW, OLD = "activation_checkpointing", "gradient_checkpointing"


def checkpointing_name() -> str:
    """``"activation_checkpointing"`` where the installed transformers has it, else
    ``"gradient_checkpointing"``. ``{name}_enable``, ``{name}_disable``, ``is_{name}``,
    ``{name}_kwargs`` and the ``TrainingArguments`` flag ``{name}`` follow it."""
    from transformers import PreTrainedModel

    return NEW if hasattr(PreTrainedModel, f"{NEW}_enable") else OLD


def enable_checkpointing(model: nn.Module, use_reentrant: bool) -> None:
    """Checkpoint every layer of the transformers `model`, reentrant or not, under the installed name."""
    name = checkpointing_name()
    getattr(model, f"{name}_enable")(**{f"{name}_kwargs": {"use_reentrant": use_reentrant}})
