"""Registry names and registration for transformers' function registries, written once.

transformers selects attention, attention-mask and experts functions by name
(``AttentionInterface``, ``AttentionMaskInterface``, ``ExpertsInterface``; the model's
``config._attn_implementation`` / ``_experts_implementation``). Packed functions are registered
under one name per set of options, so a model switched to one keeps exactly those options.

Example:
    >>> from transformers.integrations.moe import ExpertsInterface
    >>> register(ExpertsInterface, MaskStorage(bits=2), packed_experts_forward)
    'packedbool-b2'
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from layers import MaskStorage

NAME = "packedbool"
DEFAULT = MaskStorage()


def registry_name(options: MaskStorage, *, flash: bool = True, reference: str = "sdpa") -> str:
    """The registry name for these options: ``"packedbool"`` for the defaults, else with a suffix
    per non-default part (shared by the attention, mask and experts registries).

    The suffix never contains "sdpa", "flash" or "flex": transformers reads those substrings.

    Example:
        >>> registry_name(MaskStorage()), registry_name(MaskStorage(bits=4, unpack="cached"), reference="eager")
        ('packedbool', 'packedbool-b4-cached-eager')
    """
    parts = [] if options.bits == 1 else [f"b{options.bits}"]
    parts += [] if options.unpack == "lazy" else [options.unpack]
    parts += [] if options.storage == "packed" else [options.storage]
    parts += [] if options.sampler == "exact" else [options.sampler]
    parts += [] if flash else ["nofa"]
    parts += [] if reference == "sdpa" else [reference]
    return "-".join([NAME, *parts])


def register(interface: Any, options: MaskStorage, fn: Callable, **name_parts: Any) -> str:
    """Register ``partial(fn, options=options, **name_parts)`` with `interface` under
    ``registry_name(options, **name_parts)`` and return that name (idempotent: same name, same function).

    Args:
        interface: a transformers registry class (``AttentionInterface``, ``ExpertsInterface``, ...).
        options: how the masks are kept; bound to `fn` as ``options=``.
        fn: the function to register; it takes ``options`` and each of `name_parts` as keywords.
        name_parts: ``flash`` / ``reference`` (see `registry_name`), also bound to `fn`.

    Example:
        >>> from transformers import AttentionInterface
        >>> register(AttentionInterface, MaskStorage(), packed_attention_forward, flash=True, reference="eager")
        'packedbool-eager'
    """
    name = registry_name(options, **name_parts)
    interface.register(name, partial(fn, options=options, **name_parts))
    return name
