"""PackedBool against plain bool tensors on PyTorch's operator database (`op_db`).

For every OpInfo whose CPU dtypes include bool, each bool sample runs three ways where the op
has them (function, in-place variant, ``out=``), once on plain tensors and once with every bool
tensor wrapped as a PackedBool; results, mutated inputs and ``out=`` tensors must be equal
exactly (NaN equal to NaN), and where the plain op raises the packed one raises the same type.
Results torch returns as views of the input are then written to (``logical_not_``) and the
inputs compared again: a write to a view reaches its base, as in torch.

Sub-sampling, deterministic so CI takes well under a minute on 2 cores: sample ``j`` of op
``i`` runs at one (bits, unpack mode) of the 8, ``CONFIGS[(i + j) % 8]``, so each op meets
up to ``MAX_SAMPLES`` different widths x modes and every config meets about 1/8 of all
samples; at most ``MAX_SAMPLES`` samples per op (the first ones op_db yields). A one-off sweep
of every sample at two configs each found no further failure.

No op is excluded. Uninitialised outputs (`UNINITIALISED`) are compared by shape, dtype and
device only; random ops by re-seeding before each run. In-place ops the packed storage cannot
follow (they change the shape) must raise a `PackedBoolError` naming the op (`REFUSED`).
"""

from __future__ import annotations

import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.utils._pytree import tree_flatten, tree_map

from bittensor_core import PackedBool, PackedBoolError

from .strategies import MODES, WIDTHS

CONFIGS = [(bits, mode) for bits in WIDTHS for mode in MODES]
MAX_SAMPLES = 6

# Outputs are uninitialised memory: only shape, dtype and device are compared.
UNINITIALISED = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted"}
# No op is excluded: random ops (feature_alpha_dropout) are compared by re-seeding before each
# run; CUDA-only ops have no CPU bool dtypes. Uninitialised outputs are compared above.
# In-place ops that change the shape: a PackedBool's shape is fixed, so they raise clearly.
REFUSED = {"resize_", "resize_as_", "squeeze_", "unsqueeze_", "t_", "transpose_", "as_strided_"}

OPS = [op for op in op_db if torch.bool in op.supported_dtypes("cpu")]


def _clone(tree: object) -> object:
    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, tree)


def _packed(tree: object, bits: int, mode: str) -> object:
    def wrap(x: object) -> object:
        plain = type(x) is torch.Tensor and x.dtype == torch.bool and x.layout == torch.strided
        return PackedBool(x, bits=bits, unpack=mode) if plain else x

    return tree_map(wrap, _clone(tree))


def _run(fn, *args, **kwargs) -> tuple[object, Exception | None]:
    torch.manual_seed(0)  # random ops draw the same numbers on both sides
    try:
        return fn(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001  (compared with the plain op's exception below)
        return None, e


def _assert_strides(got: object, expected: object) -> None:
    """Packed results report the strides torch gives (dims of size 1 have no meaningful stride)."""
    for g, e in zip(tree_flatten(got)[0], tree_flatten(expected)[0], strict=True):
        if isinstance(g, PackedBool) and isinstance(e, torch.Tensor):
            big = [d for d, n in enumerate(e.shape) if n > 1]
            assert [g.stride(d) for d in big] == [e.stride(d) for d in big], (g.stride(), e.stride())


def _assert_same(got: object, expected: object, *, values: bool = True) -> None:
    unpack = lambda x: x.unpack() if isinstance(x, PackedBool) else x  # noqa: E731
    got_leaves, got_spec = tree_flatten(tree_map(unpack, got))
    exp_leaves, exp_spec = tree_flatten(expected)
    assert len(got_leaves) == len(exp_leaves), (got_spec, exp_spec)
    for g, e in zip(got_leaves, exp_leaves, strict=True):
        if not isinstance(e, torch.Tensor):
            assert g == e or (g != g and e != e), (g, e)
        elif values:
            torch.testing.assert_close(g, e, rtol=0, atol=0, equal_nan=True)
        else:
            assert (g.shape, g.dtype, g.device) == (e.shape, e.dtype, e.device)


def _views_of(result: object, base: object) -> list[torch.Tensor]:
    bases = [b for b in tree_flatten(base)[0] if isinstance(b, torch.Tensor)]
    return [
        r
        for r in tree_flatten(result)[0]
        if isinstance(r, torch.Tensor)
        and r.dtype == torch.bool
        and r._is_view()
        and any(torch._C._is_alias_of(r, b) for b in bases)
    ]


def _overlaps(view: torch.Tensor) -> bool:
    """Do two elements of `view` share memory (an overlapping unfold / as_strided)?"""
    base = view._base if view._base is not None else view
    addresses = torch.arange(base.untyped_storage().nbytes()).as_strided(
        view.shape, view.stride(), view.storage_offset()
    )
    return addresses.unique().numel() < addresses.numel()


def _check(name: str, fn, args: tuple, kwargs: dict, config: tuple[int, str], uninit: bool) -> None:
    plain = _clone((args, kwargs))
    expected, plain_error = _run(fn, *plain[0], **plain[1])
    packed = _packed((args, kwargs), *config)
    got, error = _run(fn, *packed[0], **packed[1])
    if plain_error is not None:
        assert isinstance(error, type(plain_error)), f"{name}: torch raised {plain_error!r}, got {error!r}"
        return
    if isinstance(error, PackedBoolError) and name.rstrip("_") + "_" in REFUSED:
        assert "aten." in str(error), error  # the message names the op
        return
    assert error is None, f"{name}: {error!r}"
    _assert_same(got, expected, values=not uninit)
    _assert_same(packed, plain, values=not uninit)  # mutated inputs and out= tensors
    bool_inputs = [x for x in tree_flatten(plain)[0] if isinstance(x, torch.Tensor) and x.dtype == torch.bool]
    if all(x.is_contiguous() for x in bool_inputs):  # PackedBool packs a contiguous copy
        _assert_strides(got, expected)
    views = _views_of(expected, plain)
    if views:  # write through the views: the inputs must change as in torch
        got_views = [g for g in tree_flatten(got)[0] if isinstance(g, torch.Tensor)]
        for view in views:
            index = [id(e) for e in tree_flatten(expected)[0]].index(id(view))
            _, plain_error = _run(torch.Tensor.logical_not_, view)
            _, error = _run(torch.Tensor.logical_not_, got_views[index])
            if isinstance(error, PackedBoolError) and _overlaps(view):
                return  # torch's result would depend on the kernel's write order: refused
            assert (error is None) == (plain_error is None), (plain_error, error)
        _assert_same(packed, plain)


@pytest.mark.parametrize("i", range(len(OPS)), ids=[f"{op.name}.{op.variant_test_name}" for op in OPS])
def test_op_matches_plain_bool(i: int) -> None:
    op = OPS[i]
    uninit = op.name in UNINITIALISED
    torch.manual_seed(i)  # op_db draws sample values at random
    samples = list(op.sample_inputs("cpu", torch.bool))[:MAX_SAMPLES]
    for j, sample in enumerate(samples):
        config = CONFIGS[(i + j) % len(CONFIGS)]
        args, kwargs = (sample.input, *sample.args), dict(sample.kwargs)
        _check(op.name, op.op, args, kwargs, config, uninit)
        if op.inplace_variant is not None:
            _check(op.name + "_", op.inplace_variant, args, kwargs, config, uninit)
        expected, error = _run(op.op, *_clone(args), **_clone(kwargs))
        if op.supports_out and error is None:
            out = tree_map(lambda x: torch.zeros_like(x) if isinstance(x, torch.Tensor) else x, expected)
            _check(op.name, op.op, args, {**kwargs, "out": out}, config, uninit)
