"""`SavedTensorCensus`: exact count of the bytes autograd saves for backward.

Each storage is counted once (a tensor saved by two ops, or two views of one buffer, count
once); a PackedBool counts its packed bytes. Use it to check what packing saves on your model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from .layout import check_bits
from .packed_bool import PackedBool
from .saved_bools import SavedBool, pack_saved, unpack_saved


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
        if isinstance(t, PackedBool):
            storage, nbytes, dtype = t.packed, t.packed_nbytes, torch.bool
            key = (t.packed.device, t.packed.untyped_storage().data_ptr())
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

    def report(self) -> dict[str, int]:
        """Bytes per dtype name, plus the total and the PackedBool share."""
        out = {str(d).removeprefix("torch."): n for d, n in self.bytes_by_dtype.items()}
        return out | {"packed": self.packed_bytes, "total": self.total_bytes}
