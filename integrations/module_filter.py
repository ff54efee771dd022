"""Which modules `patch_model` packs: include / exclude patterns on module names, as PEFT matches
``target_modules`` / ``exclude_modules``.

A pattern is either a ``str``, a regular expression that must match a qualified module name
in full (``re.fullmatch``), or a list of names, each matching a qualified name equal to it or
ending in ``"." + name``. Unlike PEFT, which picks leaf layers, a module is also matched when a
module containing it is: a pattern naming a block covers everything inside it, so
``exclude=["lora_dropout"]`` covers peft's ``...lora_dropout.default``. Names are those of
``model.named_modules()`` on the model `patch_model` patches (inside DDP / torch.compile / peft
wrappers).

Example:
    >>> scope = ModuleFilter(model, include=r".*encoder\\.layer\\.[01]")
    >>> scope.packs("bert.encoder.layer.0.attention.self"), scope.packs("bert.encoder.layer.2.output")
    (True, False)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from torch import nn

from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError

Patterns = str | Sequence[str] | None
EXCLUDED = "excluded by filter"


class ModuleFilter:
    """The include / exclude choice of `patch_model`, checked against `model`'s module names.

    Raises:
        PackedBoolTypeError: a pattern is neither a str nor a list of str.
        PackedBoolValueError: a regular expression does not compile, or a pattern (or a listed
            name) matches no module of `model`.
    """

    def __init__(self, model: nn.Module, include: Patterns = None, exclude: Patterns = None) -> None:
        names = [name for name, _ in model.named_modules() if name]
        self.include = _matcher("include", include, names, type(model).__name__)
        self.exclude = _matcher("exclude", exclude, names, type(model).__name__)

    def packs(self, path: str) -> bool:
        """Whether the module at `path` (a ``named_modules()`` name) is packed: it or a module
        containing it matches `include` (when given), and neither it nor one containing it
        matches `exclude`."""
        parts = path.split(".") if path else []
        scopes = [".".join(parts[: i + 1]) for i in range(len(parts))]
        included = self.include is None or any(map(self.include, scopes))
        return included and not (self.exclude is not None and any(map(self.exclude, scopes)))


def _matcher(kind: str, patterns: Patterns, names: list[str], model: str) -> Callable[[str], bool] | None:
    """A predicate on qualified names for `patterns` (None: no filter), checked to match some of `names`."""
    if patterns is None:
        return None
    sample = ", ".join(repr(n) for n in names[-3:])
    if isinstance(patterns, str):
        try:
            regex = re.compile(patterns)
        except re.error as err:
            raise PackedBoolValueError(
                f"{kind}={patterns!r} is not a valid regular expression ({err}); a str is matched in full against"
                " module names (re.fullmatch), a list of names by suffix."
            ) from None
        if not any(regex.fullmatch(n) for n in names):
            raise PackedBoolValueError(
                f"{kind}={patterns!r} matches no module name of {model} in full (re.fullmatch); names look like"
                f" {sample}: prefix the pattern with '.*' to match a suffix."
            )
        return lambda name: regex.fullmatch(name) is not None
    if not isinstance(patterns, Sequence) or not all(isinstance(p, str) for p in patterns):
        raise PackedBoolTypeError(
            f"{kind}={patterns!r:.80}: expected a regular expression (str) or a list of module names (list of str)."
        )
    listed = tuple(patterns)

    def matches(name: str, entry: str) -> bool:
        return name == entry or name.endswith("." + entry)

    missing = [entry for entry in listed if not any(matches(n, entry) for n in names)]
    if missing or not listed:
        raise PackedBoolValueError(
            f"{kind}={list(listed)!r}: {missing or 'the empty list'} names no module of {model}; a listed name"
            f" matches a module name equal to it or ending in '.' + name (names look like {sample})."
        )
    return lambda name: any(matches(name, entry) for entry in listed)
