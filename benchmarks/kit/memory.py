"""Peak memory and saved-for-backward bytes of one call, on CPU and CUDA, behind one function each.

- `peak_memory(fn, *track, device=...)`: on CUDA, ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats`` (everything resident on the device counts); on CPU, the exact
  live-storage peak from ``torch.distributed._tools.mem_tracker.MemTracker``, counting the
  modules, optimizers and tensors given in ``track`` plus every storage created during ``fn``.
- `saved_bytes(fn)`: the bytes autograd saves for backward while ``fn`` runs
  (``bittensor_core.SavedTensorCensus``, each storage once, a PackedBool at its packed size).

Example:
    >>> def step():
    ...     model(x).sum().backward(); opt.step(); opt.zero_grad(set_to_none=True)
    >>> _, peak = peak_memory(step, model, opt, x)            # bytes
    >>> loss, census = saved_bytes(lambda: model(x).sum())   # census.total_bytes
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker

from bittensor_core import SavedTensorCensus

T = TypeVar("T")

__all__ = ["peak_memory", "retained_after_forward", "saved_bytes"]


class _NoHook:
    """A hook handle with nothing to remove."""

    def remove(self) -> None:
        pass


_NO_HOOK = _NoHook()


class _Tracker(MemTracker):
    """MemTracker that accepts frozen parameters and keeps only the global peak.

    NOTE: MemTracker hooks every parameter of a module it sees to count its gradient, and torch
    refuses a hook on a tensor that does not require grad ("cannot register a hook on a tensor that
    doesn't require gradient": any model with a frozen parameter, e.g. sinusoidal tables, peft LoRA).
    A frozen parameter never gets a gradient, so it is marked hooked already (`_NO_HOOK`). Its per-module peaks cost a pass over every module per op (a tracked BERT step
    ran several times slower): only the global peak is kept.

    NOTE: MemTracker records every storage an aten op outputs; ``torch.from_numpy`` under a
    dispatch mode emits ``aten.lift_fresh``, so the numpy-made buffers of packedbool's CPU kernels
    are counted too. Not counted: numpy's own temporaries inside a kernel, and temporaries made
    and freed entirely inside a tensor subclass's ``__torch_dispatch__``.
    """

    def _track_module_params_and_buffers(
        self, module: torch.nn.Module, install_grad_hooks: bool = True
    ) -> tuple[int, int]:
        for param in module.parameters():
            if not param.requires_grad and param not in self._param_to_grad_hook_handles:
                self._param_to_grad_hook_handles[param] = (_NO_HOOK, _NO_HOOK)
        return super()._track_module_params_and_buffers(module, install_grad_hooks)

    def _update_peak_stats(self, peak_state: object) -> None:
        for dev, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                self._peak_mem[dev] = snap[_TOTAL_KEY]
                self._peak_mem_snap[dev] = dict(snap)


def peak_memory(
    fn: Callable[[], T],
    *track: torch.nn.Module | torch.optim.Optimizer | torch.Tensor,
    device: torch.device | str = "cpu",
) -> tuple[T, int]:
    """Run ``fn()`` once; return its result and the peak bytes live on ``device`` meanwhile.

    Args:
        fn: the work to measure, e.g. one training step.
        track: on CPU, the already-existing modules (parameters, buffers, gradients), optimizers
            (states) and tensors (inputs) to count; CUDA counts everything allocated anyway.
        device: where ``fn`` runs; "cuda" uses the caching allocator's peak statistics.

    Example:
        >>> _, peak = peak_memory(lambda: model(x).sum().backward(), model, x)
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device)
    tracker = _Tracker()
    tracker.track_external(*track)
    with tracker:
        out = fn()
    snapshot = tracker.get_tracker_snapshot("peak")
    return out, sum(snap["Total"] for dev, snap in snapshot.items() if dev.type == device.type)


def saved_bytes(fn: Callable[[], T]) -> tuple[T, SavedTensorCensus]:
    """Run ``fn()`` (a forward pass) under a census of what autograd saves for backward.

    Example:
        >>> loss, census = saved_bytes(lambda: model(x).sum())
        >>> census.total_bytes, census.report()
        >>> loss.backward()   # backward may run after the census ends
    """
    with SavedTensorCensus() as census:
        out = fn()
    return out, census


def retained_after_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Bytes created by the forward pass and still alive after it (loss included), then backward.

    NOTE: this is what the graph keeps for backward. A saved-tensor census (`saved_bytes`) cannot
    see inside a non-reentrant checkpoint (gradient checkpointing, the packed attention core): the
    inputs it keeps for the recompute are held by its closure, not saved through the hooks.
    """
    tracker = _Tracker()
    with tracker:
        loss = model(**batch).loss
        snapshot = tracker.get_tracker_snapshot()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(s["Total"] for s in snapshot.values())
