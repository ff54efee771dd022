"""The study's variations, and how each one is put on (and taken off) a model.

``baseline`` is the model as loaded (stock ``nn.Dropout``, attention-probability dropout in the
attention function). Every other variation goes through ``integrations.huggingface.patch_model``,
which packs the dropout masks and the attention-probability dropout masks.

Example:
    >>> with applied(model, VARIATIONS["packed-1bit-lazy"]) as report:
    ...     loss = model(**batch).loss          # masks kept at 1 bit
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from bittensor_core.errors import PackedBoolValueError

__all__ = ["BASELINE", "BOOL_REFERENCE", "VARIATIONS", "Variation", "applied", "parse_variations"]

BASELINE = "baseline"


@dataclass(frozen=True)
class Variation:
    """One way of keeping the masks. ``bits=None`` means the stock model (no patching)."""

    name: str
    bits: int | None = None
    unpack: str = "lazy"
    storage: str = "packed"
    sampler: str = "exact"
    label: str = ""

    @property
    def is_baseline(self) -> bool:
        return self.bits is None


VARIATIONS: dict[str, Variation] = {
    v.name: v
    for v in (
        Variation(BASELINE, label="stock nn.Dropout"),
        Variation("packed-1bit-lazy", 1, "lazy", label="1 bit, unpack on use (default)"),
        Variation("packed-1bit-cached", 1, "cached", label="1 bit, unpacked tensor cached"),
        Variation("packed-2bit", 2, label="2 bits per element (ablation)"),
        Variation("packed-4bit", 4, label="4 bits per element (ablation)"),
        Variation("seeded-0bit", 1, storage="seeded", label="generator state only, mask redrawn in backward"),
        # Not in the default set: other random numbers than nn.Dropout (like the study's rand_like).
        Variation(
            "packed-1bit-fast",
            1,
            sampler="fast",
            label="1 bit, counter-based sampler (not nn.Dropout's draws)",
        ),
    )
}
# What a 1-byte bool mask costs (CUDA's native_dropout saves one): the compression reference.
BOOL_REFERENCE = Variation("packed-8bit", 8, label="1 byte per element, as a bool mask")


def parse_variations(names: str | list[str]) -> list[Variation]:
    """Variations by name (comma-separated string or list); the baseline is always first."""
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in wanted if n not in VARIATIONS]
    if unknown:
        raise PackedBoolValueError(f"unknown variation(s) {unknown}; choose from {list(VARIATIONS)}.")
    return [VARIATIONS[BASELINE]] + [VARIATIONS[n] for n in dict.fromkeys(wanted) if n != BASELINE]


@contextmanager
def applied(model: nn.Module, variation: Variation) -> Iterator[str]:
    """Patch `model` for `variation` inside the block (nothing for the baseline); yield a summary."""
    if variation.is_baseline:
        yield "stock model"
        return
    from integrations.huggingface import patch_model, unpatch_model

    report = patch_model(
        model,
        bits=variation.bits,
        unpack=variation.unpack,
        storage=variation.storage,
        sampler=variation.sampler,
    )
    try:
        yield str(report).splitlines()[0]
    finally:
        unpatch_model(model)
