"""`Mask`: a bool mask packed once, carried as one value from its draw to its backward.

NOTE: a Mask keeps the packing of its flattened elements, ``ceil(numel * bits / 8)`` bytes whatever
its shape: a broadcast mask ((B, H, 1, 1) head gates, (B, 1, 1) DropPath) or a mask whose rows do
not fill whole bytes takes no padding byte per row. Where rows do fill whole bytes those are the
`bittensor_core.layout` rows' bytes, flattened. The bytes are packed once (`Mask.of`), saved for
backward as they are (`Mask.saved`) and read once there (`unpack` or `decode.unpack_scaled`).

A plain Python object around a plain uint8 tensor, not a tensor subclass: torch.compile traces it
like any other Python value, so a packed layer compiles into one graph with no break (a `PackedBool`
cannot be built inside a traced autograd.Function). `Mask.public` is the one conversion to the
public `PackedBool`, at the edge where a mask is handed to users.
"""

from __future__ import annotations

import math

import torch

from . import kernels
from .census import saved_mask_bytes
from .decode import unpack_scaled
from .layout import fills_bytes, packed_shape
from .packed_bool import PackedBool
from .tracing import tracing

Shape = torch.Size | tuple[int, ...]


class Mask:
    """A bool mask of logical `shape` stored as its flattened elements packed at `bits` bits.

    Attributes:
        bytes: 1-D uint8, ``ceil(numel * bits / 8)`` bytes (see the NOTE above).
        shape: the mask's logical shape; bits: 1, 2, 4 or 8; unpack_mode: "lazy" or "cached".

    Example:
        >>> m = Mask.of(torch.rand(4, 10) < 0.9)
        >>> m.bytes.shape, m.packed.shape, m.unpack().shape
        (torch.Size([5]), torch.Size([4, 2]), torch.Size([4, 10]))
    """

    __slots__ = ("bytes", "shape", "bits", "unpack_mode", "_cache")

    def __init__(
        self,
        bytes: torch.Tensor,
        shape: Shape,
        bits: int = 1,
        unpack_mode: str = "lazy",
        unpacked: torch.Tensor | None = None,
    ) -> None:
        """`unpacked`: the bool mask these bytes were packed from, if at hand (`unpack` returns it)."""
        self.bytes, self.shape, self.bits, self.unpack_mode = bytes, torch.Size(shape), bits, unpack_mode
        self._cache = unpacked

    @classmethod
    def of(cls, mask: torch.Tensor | Mask, bits: int = 1, unpack_mode: str = "lazy") -> Mask:
        """A bool tensor, `PackedBool` or `Mask` as a Mask at `bits` (shares the bytes when it can)."""
        if isinstance(mask, Mask) and mask.bits == bits:
            return cls(mask.bytes, mask.shape, bits, unpack_mode, mask.unpacked)
        if isinstance(mask, PackedBool) and mask.bits == bits:
            return cls.from_rows(mask.packed, mask.shape, bits, unpack_mode)
        if isinstance(mask, (Mask, PackedBool)):
            return cls(kernels.pack_flat(mask.unpack(), bits), mask.shape, bits, unpack_mode)
        # a freshly drawn bool mask: unpack() returns it, never re-unpacks its bytes
        return cls(kernels.pack_flat(mask, bits), mask.shape, bits, unpack_mode, unpacked=mask)

    @classmethod
    def from_rows(cls, rows: torch.Tensor, shape: Shape, bits: int = 1, unpack_mode: str = "lazy") -> Mask:
        """The mask stored in `rows` (uint8 of ``layout.packed_shape(shape, bits)``, as a sampler draws
        or a PackedBool holds them): their bytes when rows fill whole bytes, else packed again."""
        if fills_bytes(shape, bits):
            return cls(rows.reshape(-1), shape, bits, unpack_mode)
        return cls.of(kernels.unpack(rows, shape, bits), bits, unpack_mode)

    @property
    def device(self) -> torch.device:
        return self.bytes.device

    @property
    def packed(self) -> torch.Tensor:
        """The `bittensor_core.layout` rows (``layout.packed_shape(shape, bits)``): a view of the bytes
        when rows fill whole bytes, else packed from the mask (a pass: kernels read `bytes`)."""
        if fills_bytes(self.shape, self.bits):
            return self.bytes.view(packed_shape(self.shape, self.bits))
        return kernels.pack(self.unpack(), self.bits)

    @property
    def unpacked(self) -> torch.Tensor | None:
        """The bool mask, where it is at hand (drawn, or unpacked in "cached" mode) without a pass."""
        return self._cache

    @property
    def packed_nbytes(self) -> int:
        return self.bytes.numel()

    def numel(self) -> int:
        return math.prod(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def unpack(self) -> torch.Tensor:
        """The mask as a bool tensor: the one it was built from (`unpacked`), else unpacked
        from the bytes (contiguous; kept after the first call in "cached" mode). Do not modify it."""
        if self._cache is not None:
            return self._cache
        out = kernels.unpack_flat(self.bytes, self.shape, self.bits)
        if self.unpack_mode == "cached":
            self._cache = out
        return out

    def scaled(self, scale: torch.Tensor) -> torch.Tensor:
        """The tensor ``mask * scale`` (0 where False, `scale` where True, scale's dtype), decoded
        from the bytes in one pass (`bittensor_core.unpack_scaled`)."""
        if fills_bytes(self.shape, self.bits):
            return unpack_scaled(self.packed, self.shape, self.bits, scale)
        return unpack_scaled(self.bytes, (self.numel(),), self.bits, scale).view(self.shape)

    def saved(self) -> torch.Tensor:
        """The bytes as autograd keeps them: plain uint8 (see `saved_mask_bytes`), marked for the census
        in eager mode (no Python attribute on a tensor inside a traced graph)."""
        return self.bytes if tracing() else saved_mask_bytes(self.bytes)

    def public(self) -> PackedBool | Mask:
        """The mask handed to users: a `PackedBool` in eager mode; while tracing the Mask itself (same
        ``packed`` / ``shape`` / ``bits`` / ``unpack()``), as dynamo cannot build the subclass."""
        if tracing():
            return self
        return PackedBool.from_packed(self.packed, self.shape, bits=self.bits)


def plain_bool(mask: torch.Tensor | Mask | PackedBool) -> torch.Tensor:
    """A bool tensor, `PackedBool` or `Mask` as a plain bool tensor (a bool tensor as it is)."""
    return mask.unpack() if isinstance(mask, (Mask, PackedBool)) else mask
