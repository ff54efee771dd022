"""Eager decode of packed bytes to values: one 256-row table lookup per byte (see `kernels.scaled_fields`)."""

from __future__ import annotations

from functools import lru_cache

import torch

from ..layout import per_byte


def scaled_fields(packed: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    """(bytes, 8 // bits): row i holds the values (0 or `scale`) of the fields of byte i."""
    return _table(bits, scale, packed.device).index_select(0, packed.reshape(-1).int())


@lru_cache(maxsize=16)
def _fields(bits: int, device: torch.device) -> torch.Tensor:
    """(256, 8 // bits) bool: row b says which elements packed in byte b are set."""
    shifts = torch.arange(per_byte(bits), device=device) * bits
    return ((torch.arange(256, device=device)[:, None] >> shifts) & 1).bool()


def _table(bits: int, scale: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(256, 8 // bits): row b holds the values (0 or `scale`) of the elements in byte b."""
    # Built from the scale tensor itself (no float() of it): the exact value.
    return torch.where(
        _fields(bits, device), scale.to(device), torch.zeros((), dtype=scale.dtype, device=device)
    )
