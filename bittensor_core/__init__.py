"""bittensor_core: store any bool tensor at 1 bit per element.

`PackedBool` is the tensor subclass, `pack_saved_bools` packs every bool tensor autograd saves.
`packed_from_random_bytes` / `causal_rows` build packed rows directly and `unpack_scaled` decodes
them to a {0, scale} float tensor, so layers build and read masks without writing bytes themselves.
"""

from . import ops as _ops  # noqa: F401  (fills the dispatch table)
from . import serialization as _serialization  # noqa: F401  (registers the safe global)
from .census import SavedTensorCensus, saved_mask_bytes
from .construct import causal_rows, packed_from_random_bytes
from .decode import unpack_scaled
from .errors import (
    CorruptPayloadError,
    PackedBoolError,
    PackedBoolFallbackWarning,
    PackedBoolTypeError,
    PackedBoolValueError,
    UnpackFallbackError,
)
from .layout import UNPACK_MODES, WIDTHS, packed_shape, row_bytes
from .packed_bool import PackedBool
from .packed_mask import Mask, plain_bool
from .saved_bools import pack_saved_bools

implements = PackedBool.implements  # register a packed-bytes handler: `@implements(aten.op.overload)`

__all__ = [
    "UNPACK_MODES",
    "WIDTHS",
    "CorruptPayloadError",
    "Mask",
    "PackedBool",
    "PackedBoolError",
    "PackedBoolFallbackWarning",
    "PackedBoolTypeError",
    "PackedBoolValueError",
    "SavedTensorCensus",
    "UnpackFallbackError",
    "causal_rows",
    "implements",
    "packed_from_random_bytes",
    "pack_saved_bools",
    "packed_shape",
    "plain_bool",
    "row_bytes",
    "saved_mask_bytes",
    "unpack_scaled",
]
