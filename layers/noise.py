"""The dropout noise tensor {0, 1 / (1 - p)}, decoded straight from packed mask bytes.

``F.dropout`` multiplies by a float noise tensor holding 0 or 1 / (1 - p); the packed layers
rebuild exactly that tensor from the mask's packed bytes with one table lookup per byte (a byte
of a 1-bit mask selects 8 noise values), instead of unpacking to bool, casting and scaling
(three passes over the activation). Then ``x * noise`` is the very op F.dropout runs.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from bittensor_core.layout import last_dim, per_byte

from .mask import Mask


def noise_scale(p: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """1 / (1 - p) as a 0-dim tensor of `dtype`, rounded exactly as F.dropout rounds its noise.

    F.dropout on CPU computes ``noise = bernoulli(1 - p).div_(1 - p)``; ``torch.native_dropout``
    multiplies by the double 1 / (1 - p) instead, and the two differ in the last bit for some p
    (0.123 and 0.45 in float32). Using this value keeps outputs and gradients bit-identical to
    nn.Dropout for every p. With p = 1 (nothing kept) the scale is 1.
    """
    if torch.compiler.is_compiling():  # a constant: the partitioner rebuilds it, never saves it
        return constant(_scale_value(p, dtype), dtype, device)
    one = torch.ones((), dtype=dtype, device=device)
    return one if p >= 1.0 else one.div_(1.0 - p)


def constant(value: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A 0-dim constant. While compiling it is built on ``aten.empty``, which AOTAutograd's CSE never
    merges: a constant merged across two checkpointed layers would be saved (MUST_SAVE) for backward."""
    if torch.compiler.is_compiling():
        return torch.empty((), dtype=dtype, device=device).fill_(value)
    return torch.full((), value, dtype=dtype, device=device)


@torch.compiler.assume_constant_result
def _scale_value(p: float, dtype: torch.dtype) -> float:
    """`noise_scale` on CPU as a Python float (exact: a float64 holds any float16/32 value)."""
    return 1.0 if p >= 1.0 else torch.ones((), dtype=dtype).div_(1.0 - p).item()


@lru_cache(maxsize=16)
def _fields(bits: int, device: torch.device) -> torch.Tensor:
    """(256, 8 // bits) bool: row b says which elements packed in byte b are set."""
    shifts = torch.arange(per_byte(bits), device=device) * bits
    return ((torch.arange(256, device=device)[:, None] >> shifts) & 1).bool()


def _table(bits: int, scale: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(256, 8 // bits): row b holds the noise values (0 or `scale`) of the elements in byte b."""
    # Built from the scale tensor itself (no float() of it): traceable, and the exact value.
    fields = _fields.__wrapped__(bits, device) if torch.compiler.is_compiling() else _fields(bits, device)
    return torch.where(fields, scale.to(device), torch.zeros((), dtype=scale.dtype, device=device))


def _traced_rows(packed: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    """The table lookup as pointwise ops (broadcast shift, and, where): inductor fuses them into the
    kernel that multiplies by the noise, and AOTAutograd's partitioner recomputes them in backward
    from the saved bytes instead of saving the float noise (it does not recompute an index_select).
    Same values: 0 or `scale` exactly."""
    shifts = torch.arange(per_byte(bits), device=packed.device, dtype=torch.uint8) * bits
    fields = (packed.reshape(-1, 1) >> shifts) & 1
    return torch.where(fields != 0, scale.to(packed.device), constant(0.0, scale.dtype, packed.device))


def packed_noise(mask: Mask, scale: torch.Tensor) -> torch.Tensor:
    """The tensor ``mask * scale`` (0 where False, `scale` where True), mask's shape, scale's dtype.

    Args:
        mask: `Mask` or PackedBool of any shape and width.
        scale: 0-dim float tensor (see `noise_scale`); its dtype is the result's dtype.

    Example:
        >>> m = PackedBool(torch.rand(4, 16) < 0.9)
        >>> torch.equal(packed_noise(m, noise_scale(0.1, torch.float32)), m.unpack().float().div_(0.9))
        True
    """
    return noise_from_bytes(mask.packed, mask.shape, mask.bits, scale)


def noise_from_bytes(
    packed: torch.Tensor, shape: torch.Size | tuple[int, ...], bits: int, scale: torch.Tensor
) -> torch.Tensor:
    """`packed_noise` on plain packed rows (uint8 in the `bittensor_core.layout` layout).

    Args:
        packed: uint8 of shape ``layout.packed_shape(shape, bits)``.
        shape: the mask's logical shape; bits: its width.
        scale: 0-dim float tensor; its dtype is the result's dtype.
    """
    if torch.compiler.is_compiling():
        rows = _traced_rows(packed, bits, scale)
    else:
        rows = _table(bits, scale, packed.device).index_select(0, packed.reshape(-1).int())  # (bytes, 8 // bits)
    cols = last_dim(shape)
    rows = rows.view(*packed.shape[:-1], packed.shape[-1] * per_byte(bits))  # not -1: may be empty
    if torch.compiler.is_compiling() or rows.shape[-1] != cols:  # drop the row padding (no size guard)
        rows = rows[..., :cols]
    return rows.reshape(shape)
