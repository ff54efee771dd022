"""Handlers that run aten ops directly on packed bytes; importing this fills the table."""

from . import bitwise, copy, reductions, shape  # noqa: F401
