"""The one error base class of packedbool."""

__all__ = [
    "CorruptPayloadError",
    "PackedBoolError",
    "PackedBoolFallbackWarning",
    "PackedBoolTypeError",
    "PackedBoolValueError",
    "UnpackFallbackError",
]


class PackedBoolError(Exception):
    """Base class of every error packedbool raises on its own account.

    Errors that torch itself would raise for the same input (shape or device mismatches) are
    left to torch, so code that catches torch's errors keeps working.
    """


class PackedBoolTypeError(PackedBoolError, TypeError):
    """A value has the wrong dtype or type; the message names it and the fix."""


class PackedBoolValueError(PackedBoolError, ValueError):
    """A value is out of range; the message names it and the allowed values."""


class CorruptPayloadError(PackedBoolError, ValueError):
    """A serialized PackedBool does not match its own metadata or checksum."""


class UnpackFallbackError(PackedBoolError, RuntimeError):
    """An op took the unpack fallback while ``PackedBool.on_fallback = "raise"``; the message names it."""


class PackedBoolFallbackWarning(UserWarning):
    """An op took the unpack fallback while ``PackedBool.on_fallback = "warn"``; the message names it."""
