"""`PackedBool`: a torch.Tensor subclass that stores a bool tensor at 1, 2, 4 or 8 bits."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from . import kernels
from .dispatch import Handler, dispatch
from .errors import PackedBoolError, PackedBoolTypeError
from .layout import check_bits, check_unpack_mode, last_dim, logical_strides, with_strides


class PackedBool(torch.Tensor):
    """A bool tensor stored packed: `bits` bits per element in uint8 rows.

    It reports ``dtype=torch.bool`` and the mask's shape and device, so code that only reads
    ``.shape`` / ``.dtype`` cannot tell it from the bool tensor. Bitwise ops, popcount
    reductions, clone/to/copy_ and shape ops on the leading dims run on the packed bytes; every
    other op unpacks, runs, and returns plain tensors.

    Args:
        mask: bool tensor of any shape, device and memory format (0-dim and empty included).
        bits: storage width per element, one of 1, 2, 4, 8.
        unpack: ``"lazy"`` unpacks on every use and keeps nothing; ``"cached"`` keeps the
            unpacked tensor after the first use until `release()`.

    Example:
        >>> m = torch.rand(4, 100) < 0.9
        >>> pb = PackedBool(m)
        >>> pb.packed.shape, pb.packed_nbytes      # 4 rows of ceil(100 / 8) bytes
        (torch.Size([4, 13]), 52)
        >>> torch.equal(pb.unpack(), m), int(pb.sum()) == int(m.sum())
        (True, True)

    NOTE: storage layout in `bittensor_core.layout`; with bits=1 it equals
    ``np.packbits(mask, axis=-1, bitorder="little")``.
    """

    _packed: torch.Tensor
    _bits: int
    _unpack_mode: str
    _cache: tuple[int, torch.Tensor] | None  # (write count it was unpacked at, tensor)
    _writes: list[int]  # write counter shared by every PackedBool on the same bytes
    _view_of: tuple[PackedBool, Callable[[torch.Tensor], torch.Tensor]] | None
    _synced: int | None  # for a fallback view: the parent's write count `_packed` is from

    __torch_function__ = torch._C._disabled_torch_function_impl

    # aten op -> handler on packed bytes, filled by `bittensor_core.ops` through `implements`.
    handlers: ClassVar[dict[torch._ops.OpOverload, Handler]] = {}
    # When an op takes the unpack fallback: None (silently), "warn" (PackedBoolFallbackWarning) or
    # "raise" (UnpackFallbackError). Process-wide; the env var PACKEDBOOL_ON_FALLBACK sets the default.
    on_fallback: ClassVar[str | None] = os.environ.get("PACKEDBOOL_ON_FALLBACK") or None

    @classmethod
    def implements(cls, *ops: torch._ops.OpOverload) -> Callable[[Handler], Handler]:
        """Decorator: register a handler for aten overloads, called only when `self` (the op's first
        argument) is a PackedBool or a list of tensors. A handler takes ``(func, args, kwargs)`` and
        returns the result, or NotImplemented to send this call to the unpack fallback.

        Example:
            >>> @PackedBool.implements(torch.ops.aten.any.default)
            ... def any_(func, args, kwargs):
            ...     return (args[0].packed != 0).any()
        """

        def register(handler: Handler) -> Handler:
            for op in ops:
                cls.handlers[op] = handler
            return handler

        return register

    @staticmethod
    def __new__(cls, mask: torch.Tensor, *, bits: int = 1, unpack: str = "lazy") -> PackedBool:
        check_bits(bits)
        check_unpack_mode(unpack)
        if isinstance(mask, PackedBool):
            if mask.bits == bits:  # same bytes, so the same write count
                same = cls.from_packed(mask.packed, mask.shape, bits=bits, unpack=unpack)
                same._writes = mask._writes
                return same
            mask = mask.unpack()
        if not isinstance(mask, torch.Tensor):
            raise PackedBoolTypeError(
                f"PackedBool wraps a bool torch.Tensor; got {type(mask).__name__}. "
                "Build one first, e.g. PackedBool(torch.as_tensor(mask, dtype=torch.bool))."
            )
        if mask.dtype != torch.bool:
            raise PackedBoolTypeError(
                f"PackedBool wraps bool tensors; got dtype={mask.dtype}. "
                "Convert first, e.g. PackedBool(mask.bool()) or PackedBool(mask != 0)."
            )
        if mask.layout != torch.strided:
            mask = mask.to_dense()  # sparse masks: packed storage is dense by design
        return cls.from_packed(kernels.pack(mask, bits), mask.shape, bits=bits, unpack=unpack)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything happens in __new__

    @classmethod
    def from_packed(
        cls,
        packed: torch.Tensor,
        shape: torch.Size | tuple[int, ...],
        *,
        bits: int = 1,
        unpack: str = "lazy",
    ) -> PackedBool:
        """Wrap already-packed uint8 storage of logical `shape` (no copy, no validation).

        The reported strides follow the storage's leading-dim strides (a row of the storage
        stands for `shape[-1]` elements), so ``is_contiguous()`` tells the truth about views.
        """
        return cls._make(packed, shape, logical_strides(packed, shape), bits, unpack)

    @classmethod
    def _make(cls, packed: torch.Tensor, shape: tuple, strides: tuple, bits: int, unpack: str) -> PackedBool:
        self = torch.Tensor._make_wrapper_subclass(
            cls, shape, strides, dtype=torch.bool, device=packed.device, requires_grad=False
        )
        self._packed, self._bits, self._unpack_mode = packed, bits, unpack
        self._cache, self._view_of, self._synced, self._writes = None, None, None, [0]
        return self

    def _like(self, packed: torch.Tensor) -> PackedBool:
        """A new mask of this shape, width and unpack mode on `packed` (new bytes: no shared writes)."""
        return PackedBool.from_packed(packed, self.shape, bits=self._bits, unpack=self._unpack_mode)

    def _alias(self, packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> PackedBool:
        """A PackedBool on (a view of) this one's bytes: writes through either are seen by both."""
        out = PackedBool.from_packed(packed, shape, bits=self._bits, unpack=self._unpack_mode)
        out._writes = self._writes
        return out

    def _wrote(self) -> None:
        """Record a write to the packed bytes: caches of every mask on them are now stale."""
        self._writes[0] += 1
        self._cache = None

    @classmethod
    def _fallback_view(cls, parent: PackedBool, plain: torch.Tensor, replay: Callable) -> PackedBool:
        """A mask torch would treat as a view of `parent` that the packed bytes cannot express
        (the op touches the packed last dim): it re-derives itself from `parent` by `replay`
        whenever `parent` changed, and writes to it go back into `parent`."""
        # Strides as torch reports them for this view, so views of it fail or succeed as in torch.
        packed = kernels.pack(plain, parent.bits)
        self = cls._make(packed, plain.shape, plain.stride(), parent.bits, parent.unpack_mode)
        self._view_of, self._synced = (parent, replay), parent._version_token()
        return self

    # ---- storage ---------------------------------------------------------------------------
    @property
    def packed(self) -> torch.Tensor:
        """The uint8 storage, shape (*shape[:-1], ceil(shape[-1] * bits / 8)).

        NOTE: for a fallback view (`pb.t()`, `pb[..., 3]`) this is a copy derived from the
        parent; write through the mask (`view.logical_not_()`), not through these bytes.
        """
        if self._view_of is not None and self._synced != self._version_token():
            parent, replay = self._view_of
            fresh = replay(parent._plain(fresh=True))
            self._packed = kernels.pack(fresh, self._bits)
            self._synced, self._cache = self._version_token(), None
        return self._packed

    def _version_token(self) -> int:
        """Changes whenever the bytes this mask reads from have been written."""
        if self._view_of is not None:
            return self._view_of[0]._version_token()
        return self._writes[0]

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def unpack_mode(self) -> str:
        return self._unpack_mode

    @property
    def packed_nbytes(self) -> int:
        """Bytes the packed storage takes (what this mask really costs in memory)."""
        return self._packed.numel()

    def unpack(self, *, fresh: bool = False) -> torch.Tensor:
        """The mask as a plain contiguous bool tensor.

        In ``"cached"`` mode the first call keeps the result and later calls return it (unless
        `fresh`), until `release()`. Do not modify the returned tensor in place.
        """
        packed = self.packed
        version = self._version_token()
        if self._cache is not None and not fresh and self._cache[0] == version:
            return self._cache[1]
        plain = kernels.unpack(packed, self.shape, self._bits)
        if self._unpack_mode == "cached" and not fresh:
            self._cache = (version, plain)
        return plain

    def _plain(self, *, fresh: bool) -> torch.Tensor:
        """The mask as a plain tensor with this tensor's strides (what torch ops would see)."""
        return with_strides(self.unpack(fresh=fresh), self.stride())

    def release(self) -> None:
        """Drop the cached unpacked tensor (no-op in lazy mode).

        Not needed for correctness: a cache is used only while no op has written the packed
        bytes (writes through `.packed` itself bypass that count: use the mask's own ops).
        """
        self._cache = None

    def _store(self, plain: torch.Tensor) -> None:
        """Write `plain` (bool, this shape) into this mask, in place: into its packed bytes, or
        for a fallback view into its parent."""
        if self._view_of is None:
            self._packed.copy_(kernels.pack(plain.expand(self.shape).contiguous(), self._bits))
            self._wrote()
            return
        parent, replay = self._view_of
        base = parent._plain(fresh=True)
        if _overlaps(base, replay):
            raise PackedBoolError(
                f"cannot write to this view of a PackedBool: its elements overlap (an unfold or "
                f"as_strided view, shape {tuple(self.shape)}), so the write order would decide "
                "the result. Write to a clone, or unpack() first."
            )
        replay(base).copy_(plain)
        parent._store(base)

    def _row_ones(self) -> torch.Tensor:
        """One packed row with every element set: XOR with it is logical NOT."""
        ones = torch.ones(last_dim(self.shape), dtype=torch.bool, device=self.device)
        return kernels.torch_ref.pack(ones, self._bits)

    # ---- tensor protocol -------------------------------------------------------------------
    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return dispatch(cls, func, args, kwargs or {})

    def __tensor_flatten__(self) -> tuple[list[str], tuple]:
        self.packed  # noqa: B018  (a fallback view syncs before its bytes are traced)
        return ["_packed"], (tuple(self.shape), self._bits, self._unpack_mode)

    @staticmethod
    def __tensor_unflatten__(inner: dict, meta: tuple, outer_size, outer_stride):
        shape, bits, unpack = meta
        return PackedBool.from_packed(inner["_packed"], outer_size, bits=bits, unpack=unpack)

    def _stable_hash_for_caching(self) -> str:
        # Metadata only (what a compiled graph depends on), as torch's AOT autograd cache expects.
        p = self._packed
        return f"PackedBool|{tuple(self.shape)}|{self._bits}|{self._unpack_mode}|{p.device.type}|{p.stride()}"

    def __deepcopy__(self, memo: dict) -> PackedBool:
        return PackedBool.from_packed(
            self.packed.clone(), self.shape, bits=self._bits, unpack=self._unpack_mode
        )

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # noqa: D105
        body = repr(self.unpack(fresh=True)).replace("\n", "\n    ")
        return (
            f"PackedBool(bits={self._bits}, unpack={self._unpack_mode!r}, "
            f"packed_nbytes={self.packed_nbytes},\n    {body})"
        )

    def __setitem__(self, index: Any, value: Any) -> None:
        # Indexing the packed last dim cannot give a view into the bits: write through a copy.
        plain = self._plain(fresh=True)
        plain[index] = value.unpack() if isinstance(value, PackedBool) else value
        self._store(plain)

    def numpy(self, *, force: bool = False):
        return self.unpack(fresh=True).numpy(force=force)

    def tolist(self) -> Any:
        return self.unpack(fresh=True).tolist()


def _overlaps(base: torch.Tensor, replay: Callable) -> bool:
    """Do two elements of the view `replay(base)` share an element of `base` (unfold windows,
    as_strided)? Stride-0 overlap needs no check: torch's own copy_ into it raises."""
    if torch._debug_has_internal_overlap(replay(base)) == 0 or base.device.type == "meta":
        return False  # 0: provably no overlap
    index = torch.arange(base.numel(), device=base.device).view(base.shape)
    addresses = replay(with_strides(index, base.stride()))
    return addresses.unique().numel() < addresses.numel()
