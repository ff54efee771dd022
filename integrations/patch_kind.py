"""What every patch kind of `patch_model` shares: the filters' scope and the applied-patch protocol.

Each kind (dropout modules, functional dropout, attention, experts, activations) is a `Patch`
subclass in its own file: ``Kind.apply(model, options, scope)`` (attention also takes ``flash``)
patches the model and returns the applied patch, which knows how to `undo` itself and `count` what
it packs; ``Kind()`` is the patch that applied nothing (what `report` counts on an unpatched
model). Applied patches are kept on the model, so they pickle with it.

Example:
    >>> scope = Scope(ModuleFilter(bert, exclude=r"dropout"))   # the classifier head's dropout
    >>> patch = DropoutModules.apply(bert, MaskStorage(), scope)   # bert-base for classification
    >>> patch.count(bert, ran=False), scope.skipped
    (37, [('dropout', 'excluded by filter')])
    >>> patch.undo(bert)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from torch import nn

from bittensor_core.tracing import tracing
from layers import MaskStorage

from .module_filter import EXCLUDED, ModuleFilter

RAN = "_packedbool_ran"  # set on the model and on each swapped dropout module once it has run


class MarkRan:
    """Forward hook on `module` that flags it as having run (`RAN`) and then removes itself: a module
    with no hooks left is called through nn.Module's fast path again, so the flag costs one call, not
    one per forward. Kept while torch.compile traces: a traced graph must not change the hooks it
    guards on.

    Attributes:
        handle: removes the hook (`DropoutModules.undo` removes it if it has not fired yet).
    """

    def __init__(self, module: nn.Module) -> None:
        self.handle = module.register_forward_hook(self)

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        module.__dict__[RAN] = True
        if not tracing():
            self.handle.remove()


def put_back(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Set each original module back at its path, in the train / eval mode its replacement followed
    since patching; a path gone since (peft's merge_and_unload drops lora_dropout) is passed over."""
    for path, original in originals.items():
        try:
            replacement = model.get_submodule(path)
        except AttributeError:
            continue
        model.set_submodule(path, original.train(replacement.training))


@dataclass
class Scope:
    """The include / exclude filters of one `patch_model` call, and what every kind left alone and why."""

    filter: ModuleFilter
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def packs(self, path: str) -> bool:
        """Whether the filters let the module at `path` be packed."""
        return self.filter.packs(path)

    def exclude(self, path: str) -> bool:
        """Whether the filters leave the module at `path` alone (then it is reported as such)."""
        if self.packs(path):
            return False
        self.skipped.append((path, EXCLUDED))
        return True


class Patch(ABC):
    """One patch kind, applied to one model; a kind built with no arguments is the patch that applied
    nothing (what `report` counts on an unpatched model)."""

    kind: ClassVar[str]  # its key in `PatchReport.replaced`
    registration: partial | None = None  # registers the implementation a kind switches the model to

    @classmethod
    @abstractmethod
    def apply(cls, model: nn.Module, options: MaskStorage, scope: Scope) -> Patch:
        """Patch `model`; skipped modules and their reasons go to ``scope.skipped``."""

    def undo(self, model: nn.Module) -> None:  # noqa: B027 (a default: nothing applied, nothing to undo)
        """Put back what `apply` changed (nothing here)."""

    def count(self, model: nn.Module, ran: bool) -> int:
        """How many of this kind are packed now; once the model has run (`ran`), those that ran packed."""
        return 0

    def implementation(self, model: nn.Module) -> str | None:
        """The transformers registry name this patch switched the model to, or None."""
        return None

    def register(self) -> None:
        """Register again the implementation this patch switched to (registries are per process: an
        unpickled model's config names one the new process has not registered)."""
        if self.registration is not None:
            self.registration()
