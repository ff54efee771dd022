"""`Mask`: what a mask type's `apply` and `grad` receive — packed bytes plus shape and width.

A plain Python object around a plain uint8 tensor (the `bittensor_core.layout` rows), not a tensor
subclass: torch.compile traces it like any other Python value, so a packed layer compiles into
one graph with no break (a `PackedBool` cannot be built inside a traced autograd.Function).
`unpack()` picks numpy / Triton in eager mode and the pure-torch unpack while compiling, which
inductor can fuse into the op that reads the mask.
"""

from __future__ import annotations

import math

import torch

from bittensor_core import PackedBool, kernels, packed_shape
from bittensor_core.kernels import torch_ref
from bittensor_core.layout import last_dim
from bittensor_core.tracing import tracing

Shape = torch.Size | tuple[int, ...]


class Mask:
    """A bool mask of logical `shape` stored as uint8 rows at `bits` bits per element.

    Attributes:
        packed: uint8 tensor of shape ``layout.packed_shape(shape, bits)``.
        shape: the mask's logical shape; bits: 1, 2, 4 or 8; unpack_mode: "lazy" or "cached".

    Example:
        >>> m = Mask.of(torch.rand(4, 10) < 0.9)
        >>> m.packed.shape, m.unpack().shape
        (torch.Size([4, 2]), torch.Size([4, 10]))
    """

    __slots__ = ("packed", "shape", "bits", "unpack_mode", "_cache")

    def __init__(self, packed: torch.Tensor, shape: Shape, bits: int = 1, unpack_mode: str = "lazy") -> None:
        self.packed, self.shape, self.bits, self.unpack_mode = packed, torch.Size(shape), bits, unpack_mode
        self._cache: torch.Tensor | None = None

    @classmethod
    def of(cls, mask: torch.Tensor | Mask, bits: int = 1, unpack_mode: str = "lazy") -> Mask:
        """A bool tensor, `PackedBool` or `Mask` as a Mask at `bits` (shares the bytes when it can)."""
        if isinstance(mask, (Mask, PackedBool)) and mask.bits == bits:
            return cls(mask.packed, mask.shape, bits, unpack_mode)
        out = cls(kernels.pack(plain_bool(mask), bits), mask.shape, bits, unpack_mode)
        if not isinstance(mask, (Mask, PackedBool)):
            out._cache = mask  # a freshly drawn bool mask: unpack() returns it, never re-unpacks its bytes
        return out

    @property
    def device(self) -> torch.device:
        return self.packed.device

    @property
    def packed_nbytes(self) -> int:
        return self.packed.numel()

    def numel(self) -> int:
        return math.prod(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def unpack(self) -> torch.Tensor:
        """The mask as a bool tensor: the one it was built from (`of` a bool tensor), else unpacked
        from the bytes (contiguous; kept after the first call in "cached" mode). Do not modify it."""
        if self._cache is not None:
            return self._cache
        out = kernels.unpack(self.packed, self.shape, self.bits)
        if self.unpack_mode == "cached":
            self._cache = out
        return out

    def flat(self) -> torch.Tensor:
        """What is saved: 1-D bytes, ceil(n * bits / 8) whatever the shape.

        Broadcast masks end in size-1 dims ((B, H, 1, 1) head gates, (B, 1, 1) DropPath); packed
        along their own last dim each element would take a whole byte. Aligned rows share bytes.
        """
        if _aligned(self.shape, self.bits):
            return self.packed.reshape(-1)
        if tracing():
            return torch_ref.pack_flat(self.unpack().reshape(-1), self.bits)
        return kernels.pack(self.unpack().reshape(-1), self.bits)

    @classmethod
    def unflat(cls, flat: torch.Tensor, shape: Shape, bits: int, unpack_mode: str) -> Mask:
        """Inverse of `flat`."""
        if _aligned(shape, bits):
            return cls(flat.view(packed_shape(shape, bits)), shape, bits, unpack_mode)
        n = math.prod(shape)
        plain_flat = torch_ref.unpack_flat(flat, n, bits) if tracing() else kernels.unpack(flat, (n,), bits)
        return cls.of(plain_flat.view(shape), bits, unpack_mode)


def plain_bool(mask: torch.Tensor | Mask | None) -> torch.Tensor | None:
    """A `PackedBool` or `Mask` unpacked; a plain tensor (bool or float) or None as it is. The one "unpack if
    packed" of the layers and integrations."""
    return mask.unpack() if isinstance(mask, (Mask, PackedBool)) else mask


def _aligned(shape: Shape, bits: int) -> bool:
    """Rows fill whole bytes, so the storage is also the packing of the flattened mask."""
    return last_dim(shape) * bits % 8 == 0
