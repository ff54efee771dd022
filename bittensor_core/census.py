"""`SavedTensorCensus`: exact count of the bytes autograd saves for backward.

Each storage is counted once (a tensor saved by two ops, or two views of one buffer, count
once); a PackedBool, or mask bytes a layer saved through `saved_mask_bytes`, counts as a packed mask.
Use it to check what packing saves on your model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from .layout import check_bits
from .packed_bool import PackedBool
from .saved_bools import SavedBool, pack_saved, unpack_saved

_MASK_BYTES = "_packedbool_mask_bytes"  # set on the uint8 tensors `saved_mask_bytes` hands to autograd


def saved_mask_bytes(packed: torch.Tensor) -> torch.Tensor:
    """`packed` (a plain uint8 tensor holding a mask's packed bytes), marked so `SavedTensorCensus`
    counts it as a packed mask; save it for backward as it is.

    NOTE: layers save plain uint8 bytes, not a PackedBool: a saved-tensor hook that copies what it is
    given into ``torch.empty(t.size(), dtype=t.dtype)`` (``save_on_cpu(pin_memory=True)``, which
    transformers' ``offload=True`` uses) would densify a PackedBool to one byte per element; plain
    bytes are offloaded, and come back, at their packed size.
    """
    setattr(packed, _MASK_BYTES, True)
    return packed


class SavedTensorCensus(torch.autograd.graph.saved_tensors_hooks):
    """Context manager that records every tensor autograd saves while it is active.

    Args:
        pack_bools: if a width (1, 2, 4, 8) is given, also store saved bool tensors packed at that
            width, as `pack_saved_bools` does (saved-tensor hooks do not stack: innermost wins).

    Example:
        >>> with SavedTensorCensus() as census:
        ...     loss = model(x).sum()
        >>> census.total_bytes, census.bytes_by_dtype[torch.bool]
        >>> loss.backward()

    NOTE: the census keeps the storages it has seen alive only by id while active; numbers are
    for storages as saved, so buffers autograd also keeps for other reasons count too.
    """

    def __init__(self, pack_bools: int | None = None) -> None:
        if pack_bools is not None:
            check_bits(pack_bools)
        self.bytes_by_dtype: dict[torch.dtype, int] = defaultdict(int)
        self.packed_bytes = 0
        self._seen: set[tuple[Any, int]] = set()
        self._keep: list[torch.Tensor] = []  # keep storages alive so ids stay unique

        def pack(t: torch.Tensor) -> Any:
            saved = pack_saved(t, pack_bools) if pack_bools is not None else t
            self._record(saved.packed if isinstance(saved, SavedBool) else saved)
            return saved

        super().__init__(pack, unpack_saved)

    def _record(self, t: torch.Tensor) -> None:
        if isinstance(t, PackedBool) or getattr(t, _MASK_BYTES, False):
            storage = t.packed if isinstance(t, PackedBool) else t
            nbytes, dtype = storage.numel(), torch.bool  # uint8: one byte each
            key = (storage.device, storage.untyped_storage().data_ptr())
            self.packed_bytes += 0 if key in self._seen else nbytes
        else:
            storage, nbytes, dtype = t, t.untyped_storage().nbytes(), t.dtype
            key = (t.device, t.untyped_storage().data_ptr())
        if key in self._seen or nbytes == 0:
            return
        self._seen.add(key)
        self._keep.append(storage)
        self.bytes_by_dtype[dtype] += nbytes

    def __enter__(self) -> SavedTensorCensus:
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._keep.clear()

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_dtype.values())

    @property
    def mask_bytes(self) -> int:
        """What the masks cost: packed masks, plus the uint8 a seeded mask keeps (its generator state).
        The one rule for counting mask bytes: the benchmark suite and the study both read it."""
        return self.packed_bytes + self.bytes_by_dtype.get(torch.uint8, 0)

    def report(self) -> dict[str, int]:
        """Bytes per dtype name, plus the total and the PackedBool share."""
        out = {str(d).removeprefix("torch."): n for d, n in self.bytes_by_dtype.items()}
        return out | {"packed": self.packed_bytes, "total": self.total_bytes}
