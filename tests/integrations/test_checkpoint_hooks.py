"""packedbool's activation checkpoints say ``respect_saved_tensors_hooks`` explicitly where torch has
it (2.14+: left unset under a saved-tensor hook, a selective checkpoint warns that the default will
flip), and none of its code warns under ``save_on_cpu``, ``pack_saved_bools`` or the census."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.utils.checkpoint
from torch.autograd.graph import save_on_cpu

import layers.checkpointing as checkpointing
from bittensor_core import SavedTensorCensus, pack_saved_bools
from integrations.hf_checkpointing import enable_checkpointing
from integrations.huggingface import patch_model

from .tiny_models import ARCHS, loss_and_grads, stock_experts

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bittensor_core", "layers", "integrations")


def test_torch_checkpoint_is_called_only_through_the_seam() -> None:
    """One place decides how packedbool checkpoints (layers/checkpointing.py)."""
    uses = re.compile(
        r"^\s*(from torch\.utils\.checkpoint import|from torch\.utils import checkpoint|import torch\.utils"
        r"\.checkpoint)|torch\.utils\.checkpoint\.checkpoint\(",
        re.MULTILINE,
    )
    callers = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if uses.search(path.read_text())
    ]
    assert callers == ["layers/checkpointing.py"]


def test_the_seam_passes_respect_saved_tensors_hooks_where_torch_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    has_it = "respect_saved_tensors_hooks" in inspect.signature(torch.utils.checkpoint.checkpoint).parameters
    assert checkpointing.EXPLICIT_HOOKS == ({"respect_saved_tensors_hooks": False} if has_it else {})
    seen: list[dict] = []

    def recording(fn, *args, **kwargs):
        seen.append(kwargs)
        return torch.utils.checkpoint.checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "_torch_checkpoint", recording)
    # on "eager" the attention core runs the model's own function inside a mode: torch's checkpoint (the
    # sdpa path's cores take the lean recompute, NOTE (lean recompute) in layers/checkpointing.py)
    model = stock_experts(ARCHS["mixtral"].model(attn_implementation="eager"))
    patch_model(model)
    loss_and_grads(model, ARCHS["mixtral"].inputs())
    assert seen, "the eager attention runs its core under torch's checkpoint"
    for kwargs in seen:
        assert kwargs["use_reentrant"] is False
        assert ("respect_saved_tensors_hooks" in kwargs) == has_it


HOOKS = {
    "save_on_cpu": lambda: save_on_cpu(
        pin_memory=True, device_type="cuda"
    ),  # the pinned path, unpinned on CPU
    "pack_saved_bools": pack_saved_bools,
    "census": SavedTensorCensus,
}


@pytest.mark.parametrize("checkpointed", [False, True], ids=["layers", "checkpointed-layers"])
@pytest.mark.parametrize("hook", sorted(HOOKS))
@pytest.mark.parametrize("name", ["bert", "mixtral"])
def test_no_future_warning_under_saved_tensor_hooks(name: str, hook: str, checkpointed: bool) -> None:
    model = stock_experts(ARCHS[name].model(attn_implementation="sdpa"))
    if checkpointed:
        enable_checkpointing(model, use_reentrant=False)
    patch_model(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with HOOKS[hook]():
            loss_and_grads(model, ARCHS[name].inputs())
    future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert not [m for m in future if "saved_tensors_hooks" in m or "checkpoint" in m], future
