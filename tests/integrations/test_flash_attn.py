"""flash-attn delegation (CUDA only) and the packed path on CUDA; CPU checks of the fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bittensor_core import SavedTensorCensus
from bittensor_core.errors import PackedBoolValueError
from integrations.huggingface import patch_model
from layers import flash_attn

from .tiny_models import ARCHS, loss_and_grads

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_flash = pytest.mark.skipif(not flash_attn.flash_attn_available(), reason=flash_attn.NOT_INSTALLED)


def test_cpu_calls_never_delegate() -> None:
    q = torch.randn(1, 2, 8, 16, dtype=torch.float16)
    assert not flash_attn.can_delegate(q, None)
    with pytest.raises(PackedBoolValueError, match="flash"):
        flash_attn.flash_attention(q, q, q)


@needs_cuda
@needs_flash
@pytest.mark.cuda
def test_flash_attention_matches_sdpa_and_stores_no_mask() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 32, device="cuda", dtype=torch.float16, generator=gen) for _ in range(3))
    assert flash_attn.can_delegate(q, None) and not flash_attn.can_delegate(
        q, torch.ones(64, 64, dtype=torch.bool)
    )
    torch.testing.assert_close(
        flash_attn.flash_attention(q, k, v, is_causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        rtol=2e-3,
        atol=2e-3,
    )
    q.requires_grad_(True)
    with SavedTensorCensus() as census:
        flash_attn.flash_attention(q, k, v, dropout_p=0.1).sum().backward()
    assert census.bytes_by_dtype[torch.bool] == 0 and census.bytes_by_dtype[torch.uint8] == 0


@needs_cuda
@pytest.mark.cuda
def test_patched_model_on_cuda_matches_eager() -> None:
    """On CUDA the packed masks come from native_dropout, the kernel nn.Dropout runs there."""
    arch = ARCHS["gpt2"]
    inputs = {k: v.cuda() for k, v in arch.inputs(seq=64).items()}
    reference = arch.model(attn_implementation="eager").cuda()
    model = arch.model().cuda()
    patch_model(model, flash=False)
    (loss_r, grads_r), (loss_p, grads_p) = loss_and_grads(reference, inputs), loss_and_grads(model, inputs)
    torch.testing.assert_close(loss_p, loss_r)
    for name in grads_r:
        torch.testing.assert_close(grads_p[name], grads_r[name], msg=name)
