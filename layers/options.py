"""Validation of the options every packed layer shares: p, bits, unpack, storage, sampler.

Errors are `bittensor_core` errors (subclasses of ValueError / TypeError) whose messages name
the bad value and the allowed ones; `check_p` keeps nn.Dropout's exact message.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from bittensor_core import Mask, PackedBool
from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from bittensor_core.layout import check_bits, check_unpack_mode

STORAGES = ("packed", "seeded")
SAMPLERS = ("exact", "fast")


def check_p(p: float, what: str = "dropout") -> float:
    """p in [0, 1] (any real scalar, numpy's included; NaN is out of range), with nn.Dropout's message."""
    if type(p) is float and 0.0 <= p <= 1.0:  # asked per dropout call: no ABC isinstance for the usual case
        return p
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise PackedBoolTypeError(
            f"{what} probability must be a float in [0, 1], got {p!r} ({type(p).__name__})."
        )
    if not 0.0 <= p <= 1.0:  # also catches NaN, which `p < 0 or p > 1` lets through
        raise PackedBoolValueError(f"{what} probability has to be between 0 and 1, but got {p}")
    return float(p)


def check_count(name: str, value: int) -> int:
    """A positive int (numpy ints too); bools are rejected, not taken as 0 / 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise PackedBoolValueError(f"{name}={value!r} must be a positive int, got {type(value).__name__}.")
    return int(value)


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise PackedBoolValueError(f"{name}={value!r} is not supported; use one of {allowed}.")
    return value


def check_floating(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise PackedBoolTypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise PackedBoolTypeError(
            f"{what} must be a floating-point tensor, got dtype={x.dtype}; convert it, e.g. {what}.float()."
        )
    return x


@dataclass(frozen=True)
class MaskStorage:
    """How a mask is kept between forward and backward.

    Attributes:
        bits: storage width per mask element (1, 2, 4 or 8) when ``storage="packed"``.
        unpack: ``"lazy"`` (unpack in backward, keep nothing) or ``"cached"`` (keep the unpacked
            tensor after first use; only matters when the saved mask is read more than once).
        storage: ``"packed"`` keeps the mask as a PackedBool; ``"seeded"`` keeps only the random
            generator state (0 bits per element) and draws the same mask again in backward.
        sampler: ``"exact"`` draws with torch's own Bernoulli (the same numbers as nn.Dropout);
            ``"fast"`` draws with a counter-based generator seeded from torch's generator.
    """

    bits: int = 1
    unpack: str = "lazy"
    storage: str = "packed"
    sampler: str = "exact"

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_unpack_mode(self.unpack)
        check_choice("storage", self.storage, STORAGES)
        check_choice("sampler", self.sampler, SAMPLERS)

    @property
    def seeded(self) -> bool:
        """Is only the generator state kept (``storage="seeded"``), the mask drawn again in backward?"""
        return self.storage == "seeded"

    def runs_stock(self, training: bool) -> bool:
        """Whether a masked call (dropout, attention dropout) is best left to the stock op: it draws
        nothing (not `training`), or it keeps nothing for backward (grad disabled: ``no_grad``,
        ``inference_mode``) and the stock op draws the very masks this sampler draws ("exact").
        Asked once per call, so that eval and no_grad pay for no packing. (p == 0 is the caller's.)"""
        return not training or (not torch.is_grad_enabled() and self.sampler == "exact")

    def pack(self, mask: torch.Tensor) -> PackedBool:
        """The bool `mask` as a PackedBool of this width and unpack mode (an attention mask, packed once)."""
        return PackedBool(mask, bits=self.bits, unpack=self.unpack)

    def mask(self, mask: torch.Tensor | PackedBool | Mask) -> Mask:
        """`mask` (bool tensor, PackedBool or Mask) as the `Mask` a mask type runs on, at this width and
        unpack mode: packed once, or sharing its bytes where they are already these."""
        return Mask.of(mask, self.bits, self.unpack)

    def describe(self) -> str:
        """Short text for extra_repr, e.g. ``"bits=1, unpack='lazy'"`` (defaults of storage/sampler omitted)."""
        text = f"bits={self.bits}, unpack={self.unpack!r}"
        if self.storage != "packed":
            text += f", storage={self.storage!r}"
        if self.sampler != "exact":
            text += f", sampler={self.sampler!r}"
        return text
