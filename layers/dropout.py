"""`PackedDropout` / `packed_dropout`: nn.Dropout that keeps its mask at 1 bit per element.

With the default ``sampler="exact"`` the output, the gradient and the random generator's state
are bit-identical to ``nn.Dropout`` / ``F.dropout`` for the same seed: on CPU the mask is the bool
Bernoulli draw ``native_dropout`` makes (F.dropout draws the same numbers into its float noise),
the output is ``x * mask * s`` and the gradient ``grad * mask * s`` with ``s`` F.dropout's noise
value (NOTE(rounding) in `layers/noise.py`); on CUDA the mask comes from ``native_dropout``, as nn.Dropout's does.

Saved for backward: the mask's packed bytes (ceil(n * bits / 8)) — nn.Dropout saves a
4-byte float noise tensor per element on CPU and a 1-byte bool mask on CUDA. ``storage="seeded"``
saves only the generator state and draws the mask again in backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bernoulli_mask import BernoulliMask
from .fused_dropout import FusedDropoutFunction, can_fuse
from .mask_type import apply_mask
from .options import MaskStorage, check_floating, check_p
from .replayed_dropout import active_tape


class DropoutMask(BernoulliMask):
    """Element-wise Bernoulli mask over the whole input (CUDA: native_dropout's own arithmetic)."""

    def __init__(self, p: float, *, inplace: bool = False) -> None:
        super().__init__(p, inplace=inplace)

    def apply(self, mask: torch.Tensor, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda":
            return super().apply(mask, x)
        out = torch.ops.aten._masked_scale(x, mask.unpack(), 1.0 / (1.0 - self.p))  # native_dropout's kernel
        return x.copy_(out) if self.inplace else out

    def grad(self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor) -> tuple[torch.Tensor]:
        if grad_out.device.type != "cuda":
            return super().grad(mask, grad_out)
        return (torch.ops.aten.native_dropout_backward(grad_out, mask.unpack(), 1.0 / (1.0 - self.p)),)


def packed_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    bits: int = 1,
    unpack: str = "lazy",
    storage: str = "packed",
    sampler: str = "exact",
) -> torch.Tensor:
    """F.dropout that saves its mask packed. Same arguments and results as ``F.dropout``.

    Args:
        x: float tensor of any shape.
        p: probability of zeroing an element, in [0, 1].
        training: apply dropout (False: return `x` itself, like F.dropout).
        inplace: write the result into `x`.
        bits, unpack, storage, sampler: how the mask is kept and drawn (`MaskStorage`).

    Returns:
        tensor of x's shape and dtype.

    Example:
        >>> torch.manual_seed(0); a = F.dropout(x, 0.1)
        >>> torch.manual_seed(0); b = packed_dropout(x, 0.1)
        >>> torch.equal(a, b)
        True
    """
    return dropout_with(
        MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler), x, p, training, inplace
    )


def dropout_with(
    options: MaskStorage, x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> torch.Tensor:
    """`packed_dropout` with the mask's options as one `MaskStorage` (what `PackedDropout` calls).

    Example:
        >>> y = dropout_with(MaskStorage(bits=2), torch.randn(4, 8), 0.1)
    """
    p = check_p(p)
    check_floating(x, "input")
    if not training or p == 0.0 or x.numel() == 0:
        return x  # F.dropout returns its input here, drawing nothing (and so does a tape)
    if (tape := active_tape()) is not None:  # inside a recomputed region: masks replayed from its tape
        return tape.dropout(x, p, training, inplace)
    if options.runs_stock(training):  # no_grad: nothing to keep, and F.dropout draws this very mask
        return F.dropout(x, p, training, inplace)
    if p == 1.0:  # F.dropout: input * zeros({}), no random numbers drawn
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return x.mul_(zero) if inplace else x * zero
    if can_fuse(x, options, inplace):
        return FusedDropoutFunction.apply(x, p, options)
    return apply_mask(DropoutMask(p, inplace=inplace), x, storage=options)


class PackedDropout(nn.Dropout):
    """Drop-in for ``nn.Dropout`` whose mask is saved at `bits` bits per element.

    Args:
        p: probability of zeroing an element (ValueError outside [0, 1], as nn.Dropout).
        inplace: write the result into the input.
        bits: 1, 2, 4 or 8 bits per mask element.
        unpack: ``"lazy"`` or ``"cached"`` (see `PackedBool`).
        storage: ``"packed"`` or ``"seeded"`` (0 bits per element; the mask is drawn again in backward).
        sampler: ``"exact"`` (bit-identical to nn.Dropout) or ``"fast"`` (counter-based, much cheaper on CPU).

    Shape: any; output has the input's shape. Eval mode is the identity.

    Example:
        >>> drop = PackedDropout(0.1)
        >>> y = drop(torch.randn(32, 128, 312, requires_grad=True))   # saves 32*128*312/8 bytes
    """

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        bits: int = 1,
        unpack: str = "lazy",
        storage: str = "packed",
        sampler: str = "exact",
    ) -> None:
        super().__init__(check_p(p), inplace)  # check_p: nn.Dropout lets NaN through
        self.options = MaskStorage(bits=bits, unpack=unpack, storage=storage, sampler=sampler)

    @classmethod
    def from_options(cls, options: MaskStorage, p: float = 0.5, inplace: bool = False) -> PackedDropout:
        """A PackedDropout keeping its mask as `options` says (what integrations pass whole).

        Example:
            >>> drop = PackedDropout.from_options(MaskStorage(bits=2), 0.1)
        """
        module = cls(p, inplace)
        module.options = options
        return module

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout_with(self.options, input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.options.describe()}"
