"""`Mask`: a bool mask packed once and carried as one value from its draw to its backward.

NOTE (flat bytes): a Mask keeps the packing of its flattened elements, ``ceil(numel * bits / 8)``
bytes whatever its shape, so a broadcast mask ((B, H, 1, 1) head gates, (B, 1, 1) DropPath) or a
mask whose rows do not fill whole bytes takes no padding byte per row. Where rows do fill whole
bytes these are the `bittensor_core.layout` rows' bytes, flattened. The bytes are packed once
(`Mask.of`), saved for backward as they are (`Mask.saved`) and read once there (`unpack` or
`scaled`).

A plain Python object around a plain uint8 tensor, not a tensor subclass: torch.compile traces it
like any other Python value, so a packed layer compiles into one graph with no break (a `PackedBool`
cannot be built inside a traced autograd.Function). `Mask.public` is the one conversion to the
public `PackedBool`, where a mask is handed to users.
"""

from __future__ import annotations

import math

import torch

from . import kernels
from .census import saved_mask_bytes
from .decode import unpack_scaled
from .layout import last_dim, packed_shape
from .packed_bool import PackedBool
from .tracing import tracing

Shape = torch.Size | tuple[int, ...]


class Mask:
    """A bool mask of logical `shape`, its flattened elements packed at `bits` bits per element.

    Attributes:
        bytes: 1-D uint8 of ``ceil(numel * bits / 8)`` bytes (NOTE (flat bytes)).
        shape: the mask's logical shape; bits: 1, 2, 4 or 8; unpack_mode: "lazy" or "cached".

    Example:
        >>> m = Mask.of(torch.rand(4, 10) < 0.9)
        >>> m.bytes.shape, m.unpack().shape
        (torch.Size([5]), torch.Size([4, 10]))
    """

    __slots__ = ("bytes", "shape", "bits", "unpack_mode", "_plain")

    def __init__(
        self,
        bytes: torch.Tensor,
        shape: Shape,
        bits: int = 1,
        unpack_mode: str = "lazy",
        plain: torch.Tensor | None = None,
    ) -> None:
        """`plain`: the bool mask the bytes were packed from, where it is at hand (`unpack` returns it)."""
        self.bytes, self.shape, self.bits, self.unpack_mode = bytes, torch.Size(shape), bits, unpack_mode
        self._plain = plain

    @classmethod
    def of(cls, mask: torch.Tensor | PackedBool | Mask, bits: int = 1, unpack_mode: str = "lazy") -> Mask:
        """A bool tensor, `PackedBool` or `Mask` as a Mask at `bits`, sharing its bytes where they are
        already these bytes, else packed once (a drawn bool mask stays at hand for `unpack`)."""
        if isinstance(mask, Mask) and mask.bits == bits:
            return cls(mask.bytes, mask.shape, bits, unpack_mode, mask.unpacked)
        if isinstance(mask, PackedBool) and mask.bits == bits:
            return cls.from_rows(mask.packed, mask.shape, bits, unpack_mode)
        plain = plain_bool(mask)
        return cls(kernels.pack_flat(plain, bits), plain.shape, bits, unpack_mode, plain)

    @classmethod
    def from_rows(cls, rows: torch.Tensor, shape: Shape, bits: int = 1, unpack_mode: str = "lazy") -> Mask:
        """The mask held in `rows` (uint8 of ``layout.packed_shape(shape, bits)``, as a `PackedBool`
        or the fast sampler holds it): their bytes where rows fill whole bytes, else packed again."""
        if _rows_fill_bytes(shape, bits):
            return cls(rows.reshape(-1), shape, bits, unpack_mode)
        return cls.of(kernels.unpack(rows, shape, bits), bits, unpack_mode)

    @property
    def device(self) -> torch.device:
        return self.bytes.device

    @property
    def packed_nbytes(self) -> int:
        return self.bytes.numel()

    @property
    def unpacked(self) -> torch.Tensor | None:
        """The bool mask where it is at hand without a pass (packed from it, or "cached"), else None."""
        return self._plain

    def numel(self) -> int:
        return math.prod(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def unpack(self) -> torch.Tensor:
        """The mask as a bool tensor: the one it was packed from where at hand, else unpacked from the
        bytes (contiguous; kept after the first call in "cached" mode). Do not modify it."""
        if self._plain is not None:
            return self._plain
        out = kernels.unpack_flat(self.bytes, self.shape, self.bits)
        if self.unpack_mode == "cached":
            self._plain = out
        return out

    def scaled(self, scale: torch.Tensor) -> torch.Tensor:
        """The tensor ``mask * scale`` (0 where False, `scale` where True; scale's dtype), decoded from
        the bytes in one pass: F.dropout's noise tensor when `scale` is 1 / (1 - p)."""
        return unpack_scaled(self.bytes, (self.numel(),), self.bits, scale).view(self.shape)

    def saved(self) -> torch.Tensor:
        """The bytes as autograd keeps them: plain uint8 marked for the census in eager mode (see
        `saved_mask_bytes`; a tensor inside a traced graph carries no Python attribute)."""
        return self.bytes if tracing() else saved_mask_bytes(self.bytes)

    def rows(self) -> torch.Tensor:
        """The `bittensor_core.layout` rows (``packed_shape(shape, bits)``): a view of the bytes where
        rows fill whole bytes, else packed from the mask (a pass)."""
        if _rows_fill_bytes(self.shape, self.bits):
            return self.bytes.view(packed_shape(self.shape, self.bits))
        return kernels.pack(self.unpack(), self.bits)

    def public(self) -> PackedBool | Mask:
        """The mask handed to users: a `PackedBool` in eager mode; while tracing the Mask itself (same
        ``shape`` / ``bits`` / ``unpack()``), as dynamo cannot build the subclass there."""
        return self if tracing() else PackedBool.from_packed(self.rows(), self.shape, bits=self.bits)


def plain_bool(mask: torch.Tensor | PackedBool | Mask | None) -> torch.Tensor | None:
    """A `PackedBool` or `Mask` unpacked; a plain tensor (bool or float) or None as it is. The one
    "unpack if packed" of the project."""
    return mask.unpack() if isinstance(mask, (Mask, PackedBool)) else mask


def _rows_fill_bytes(shape: Shape, bits: int) -> bool:
    """Each row of `shape` fills whole bytes, so the rows' bytes are the flat bytes."""
    return last_dim(shape) * bits % 8 == 0
