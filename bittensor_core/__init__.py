"""bittensor_core: store any bool tensor at 1 bit per element.

`PackedBool` is the tensor subclass, `pack_saved_bools` packs every bool tensor autograd saves.
"""

from . import ops as _ops  # noqa: F401  (fills the dispatch table)
from . import serialization as _serialization  # noqa: F401  (registers the safe global)
from .census import SavedTensorCensus
from .dispatch import implements
from .errors import CorruptPayloadError, PackedBoolError, PackedBoolTypeError, PackedBoolValueError
from .layout import UNPACK_MODES, WIDTHS, packed_shape, row_bytes
from .packed_bool import PackedBool
from .saved_bools import pack_saved_bools

__all__ = [
    "UNPACK_MODES",
    "WIDTHS",
    "CorruptPayloadError",
    "PackedBool",
    "PackedBoolError",
    "PackedBoolTypeError",
    "PackedBoolValueError",
    "SavedTensorCensus",
    "implements",
    "pack_saved_bools",
    "packed_shape",
    "row_bytes",
]
