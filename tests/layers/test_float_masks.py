"""BinaryFloatMask: a float mask that is a binary mask over a per-key bias, kept as bits and one row,
rebuilt bit for bit; anything else left alone."""

from __future__ import annotations

import pytest
import torch

from layers.float_masks import BinaryFloatMask, pack_float_masks, restore_float_masks


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_zero_min_mask_is_rebuilt_bit_for_bit(dtype: torch.dtype) -> None:
    keep = torch.rand(2, 3, 5, 13, generator=torch.Generator().manual_seed(0)) < 0.7
    mask = torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)
    as_int = torch.int32 if dtype == torch.float32 else torch.int16
    for given in (
        mask,
        mask + torch.randn(2, 3, 1, 13).to(dtype),
    ):  # {0, min}; a per-key bias (ALiBi) and min
        packed = BinaryFloatMask.of(given)
        assert packed is not None and packed.packed.numel() * 8 < given.untyped_storage().nbytes()
        back = packed.restore()
        assert (
            back.dtype == dtype
            and back.is_contiguous()
            and torch.equal(back.view(as_int), given.view(as_int))
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.index_fill(-2, torch.tensor([0]), -0.0),  # -0.0 and +0.0 in one key's column
        lambda m: m + torch.arange(8.0)[:, None],  # a bias varying along the queries (relative positions)
        lambda m: m.requires_grad_(),  # a learned tensor
        lambda m: (
            m[:, :1, :1].clone().expand(-1, 3, 64, -1)
        ),  # a broadcast view: its storage is smaller than bits
        lambda m: m.long(),
        lambda m: torch.randn_like(m),  # a float of many values, no min: not a mask
    ],
)
def test_anything_else_is_left_as_it_is(make) -> None:
    mask = torch.zeros(2, 3, 8, 16)
    mask[0, ..., -4:] = torch.finfo(torch.float32).min
    assert BinaryFloatMask.of(mask) is not None
    assert BinaryFloatMask.of(make(mask)) is None


def test_pack_and_restore_arguments() -> None:
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 0] = torch.finfo(torch.float32).min
    hidden = torch.randn(2, 16, 8)
    args, kwargs = pack_float_masks((hidden, mask), {"bias": mask, "flag": True})
    assert (
        args[0] is hidden
        and isinstance(args[1], BinaryFloatMask)
        and isinstance(kwargs["bias"], BinaryFloatMask)
    )
    args, kwargs = restore_float_masks(args, kwargs)
    assert torch.equal(args[1], mask) and torch.equal(kwargs["bias"], mask) and kwargs["flag"] is True


def test_two_valued_floats_and_bools_are_kept_as_bits() -> None:
    """Longformer hands its attention a {0, -10000} float mask and a bool padding mask of shape (B, S)."""
    keep = torch.rand(2, 64, generator=torch.Generator().manual_seed(0)) < 0.5
    for given in (keep, torch.zeros(2, 64).masked_fill(keep, -10000.0), keep.float()):
        packed = BinaryFloatMask.of(given)
        assert packed is not None and packed.packed.numel() == 2 * 64 // 8
        assert packed.restore().dtype == given.dtype and torch.equal(packed.restore(), given)


def test_a_slice_of_a_bigger_mask_is_kept_without_its_storage() -> None:
    """Longformer slices (B, S) out of a (B, 1, S, S) float mask: keeping the slice would keep all of it."""
    big = torch.zeros(2, 1, 64, 64)
    big[0, ..., 48:] = torch.finfo(torch.float32).min
    view = big[:, 0, 0, :]
    packed = BinaryFloatMask.of(view)
    assert packed is not None and packed.packed.numel() == 2 * 64 // 8 and torch.equal(packed.restore(), view)
