"""A mask whose last dim does not fill whole bytes is packed once in forward and read once in backward."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import bittensor_core.kernels
import bittensor_core.packed_mask
from layers import DropPath, HeadGate, PackedDropout

from .helpers import leaf


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts of the kernel entry points that pack a mask and that read its bytes."""
    seen: Counter = Counter()

    def counted(module: object, name: str, kind: str) -> None:
        fn = getattr(module, name)

        def wrapper(*args: object, **kwargs: object) -> torch.Tensor:
            seen[kind] += 1
            return fn(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(bittensor_core.kernels, "pack", "pack")
    counted(bittensor_core.kernels, "unpack", "read")
    counted(bittensor_core.packed_mask, "unpack_scaled", "read")  # the bytes decoded straight to noise
    return seen


@pytest.mark.parametrize(
    "module, shape",
    [
        (PackedDropout(0.3), (4, 9, 21)),  # full-size mask, rows of 21 elements
        (DropPath(0.3), (10, 5, 3)),  # (10, 1, 1) mask
        (HeadGate(12, p=0.3), (6, 12, 5, 4)),  # (6, 12, 1, 1) mask
    ],
    ids=["PackedDropout", "DropPath", "HeadGate"],
)
def test_mask_is_packed_once_in_forward_and_read_once_in_backward(
    calls: Counter, module: torch.nn.Module, shape: tuple[int, ...]
) -> None:
    x = leaf(*shape)
    out = module(x)
    assert calls["pack"] == 1
    calls.clear()
    out.backward(torch.ones_like(out))
    assert calls == Counter(read=1)
