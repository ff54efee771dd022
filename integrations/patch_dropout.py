"""Patch kind "dropout": every ``nn.Dropout`` module swapped for a `layers.PackedDropout`.

Found by walking ``named_modules()``, replaced with ``set_submodule``: same p, same RNG stream, the
mask kept as `MaskStorage` says. Other ``_DropoutNd`` modules (Dropout1d/2d/3d, AlphaDropout) draw
different masks and are reported as left alone. Each packed dropout module is flagged when it runs,
so that, once the model has run, only those that ran count (Falcon hands its attention dropout's p
to SDPA and never calls the module).

Example:
    >>> patch = DropoutModules.apply(model, MaskStorage(), scope)
    >>> patch.undo(model)   # the original nn.Dropout modules are back
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.utils.hooks import RemovableHandle

from layers import MaskStorage, PackedDropout

from .patch_kind import RAN, MarkRan, Patch, Scope, put_back


def packed_replacement(module: nn.Dropout, options: MaskStorage) -> PackedDropout:
    """The `PackedDropout` that takes `module`'s place: its p, inplace flag and train / eval mode."""
    return PackedDropout.from_options(options, module.p, module.inplace).train(module.training)


@dataclass
class DropoutModules(Patch):
    kind = "dropout"
    originals: dict[str, nn.Module] = field(default_factory=dict)  # module path -> the module there before
    hooks: list[RemovableHandle] = field(default_factory=list)  # the ran flags

    @classmethod
    def apply(cls, model: nn.Module, options: MaskStorage, scope: Scope) -> DropoutModules:
        patch = cls()
        replacements: dict[int, nn.Module] = {}  # one replacement per module, even if registered twice
        try:
            for path, module in list(model.named_modules(remove_duplicate=False)):
                if type(module) is nn.Dropout:
                    if scope.exclude(path):
                        continue
                    if id(module) not in replacements:
                        replacements[id(module)] = packed_replacement(module, options)
                    patch.originals[path] = module
                    model.set_submodule(path, replacements[id(module)])
                elif isinstance(module, nn.modules.dropout._DropoutNd) and not isinstance(
                    module, PackedDropout
                ):
                    why = f"{type(module).__name__} is not nn.Dropout (it draws a different mask); left as is"
                    scope.skipped.append((path, why))
        except BaseException:
            patch.undo(model)  # nothing half-swapped
            raise
        return patch

    def flag_runs(self, model: nn.Module) -> None:
        """Flag `model` and each packed dropout module in it (the swapped ones and its own) when they run:
        `RAN` on the model tells `count` of every kind that it has run. Called once every kind is applied."""
        packed = {id(m): m for m in model.modules() if isinstance(m, PackedDropout)}
        self.hooks += [MarkRan(m).handle for m in [model, *packed.values()]]

    def undo(self, model: nn.Module) -> None:
        for handle in self.hooks:
            handle.remove()
        model.__dict__.pop(RAN, None)
        put_back(model, self.originals)

    def count(self, model: nn.Module, ran: bool) -> int:
        """Packed dropout modules in `model` (its own included); once it has run, those that ran."""
        return sum(isinstance(m, PackedDropout) and (not ran or RAN in m.__dict__) for m in model.modules())
