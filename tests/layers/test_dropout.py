"""PackedDropout / packed_dropout: bit-identical to nn.Dropout, mask saved at `bits` bits."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bittensor_core import WIDTHS, PackedBoolValueError
from layers import MaskStorage, PackedDropout, dropout_with, packed_dropout

from .helpers import bits_equal, leaf, packed_bytes, saved_bytes

PS = [0.1, 0.123, 0.45, 0.5, 0.9, 0.999]  # 0.123 and 0.45: native_dropout's scale differs from F.dropout's
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def run(drop, x: torch.Tensor, grad: torch.Tensor, seed: int = 7) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    out = drop(x)
    out.backward(grad)
    return out, x.grad, torch.get_rng_state()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", PS)
def test_output_grad_and_rng_bit_identical_to_nn_dropout(p: float, dtype: torch.dtype) -> None:
    x, grad = leaf(33, 75, dtype=dtype), leaf(33, 75, dtype=dtype, seed=1)
    x.data[0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])  # special values keep their bits
    ref = run(nn.Dropout(p), x, grad)
    got = run(PackedDropout(p), x, grad)
    assert bits_equal(got[0], ref[0]) and bits_equal(got[1], ref[1])
    assert torch.equal(got[2], ref[2])  # the generator is left where nn.Dropout leaves it


@pytest.mark.parametrize("storage", ["packed", "seeded"])
@pytest.mark.parametrize("unpack", ["lazy", "cached"])
@pytest.mark.parametrize("bits", WIDTHS)
def test_every_storage_option_is_bit_identical(bits: int, unpack: str, storage: str) -> None:
    x, grad = leaf(4, 9, 21), leaf(4, 9, 21, seed=1)
    ref = run(nn.Dropout(0.3), x, grad)
    got = run(PackedDropout(0.3, bits=bits, unpack=unpack, storage=storage), x, grad)
    assert all(bits_equal(a, b) for a, b in zip(got, ref, strict=True))


@pytest.mark.parametrize("bits", WIDTHS)
def test_saves_only_the_packed_mask(bits: int) -> None:
    shape = (4, 32, 40)
    x = leaf(*shape)
    out, census = saved_bytes(PackedDropout(0.2, bits=bits), x)
    assert census.total_bytes == census.packed_bytes == packed_bytes(shape, bits)
    _, native = saved_bytes(nn.Dropout(0.2), x)
    assert native.total_bytes == 4 * x.numel()  # CPU F.dropout keeps a float32 noise tensor
    assert native.total_bytes // census.total_bytes == 32 // bits
    out.sum().backward()


def test_seeded_storage_saves_no_per_element_bytes_and_redraws_the_same_mask() -> None:
    x_small, x_big = leaf(3, 8), leaf(64, 512)
    _, small = saved_bytes(PackedDropout(0.5, storage="seeded"), x_small)
    out, big = saved_bytes(PackedDropout(0.5, storage="seeded"), x_big)
    assert small.total_bytes == big.total_bytes == torch.get_rng_state().numel()  # generator state only
    out.backward(torch.ones_like(out))
    assert torch.equal(x_big.grad != 0, out != 0)  # the backward mask is the forward mask


def test_seeded_fast_sampler_keeps_eight_bytes() -> None:
    x = leaf(64, 512)
    torch.manual_seed(0)
    out, census = saved_bytes(packed_dropout, x, 0.5, storage="seeded", sampler="fast")
    assert census.total_bytes == 8
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad != 0, out != 0)
    torch.manual_seed(0)
    assert bits_equal(packed_dropout(x, 0.5, sampler="fast"), out)  # same mask as packed storage


def test_seeded_backward_leaves_global_rng_alone() -> None:
    x, grad = leaf(16, 64), leaf(16, 64, seed=1)
    torch.manual_seed(3)
    out = packed_dropout(x, 0.4, storage="seeded")
    after_forward = torch.get_rng_state()
    out.backward(grad)
    assert torch.equal(torch.get_rng_state(), after_forward)


def test_functional_matches_f_dropout_and_module_api() -> None:
    x = leaf(5, 6)
    torch.manual_seed(0)
    a = F.dropout(x, 0.25, True)
    torch.manual_seed(0)
    assert bits_equal(packed_dropout(x, 0.25, True), a)
    drop = PackedDropout(0.25)
    assert isinstance(drop, nn.Dropout) and drop.p == 0.25 and drop.inplace is False
    assert repr(drop) == "PackedDropout(p=0.25, inplace=False, bits=1, unpack='lazy')"
    assert "storage='seeded', sampler='fast'" in repr(PackedDropout(storage="seeded", sampler="fast"))
    torch.manual_seed(0)
    assert bits_equal(dropout_with(MaskStorage(bits=4), x, 0.25), a)  # the options as one object


def test_eval_and_p_zero_return_the_input_and_draw_nothing() -> None:
    x = leaf(4, 4)
    state = torch.get_rng_state()
    assert PackedDropout(0.5).eval()(x) is x
    assert packed_dropout(x, 0.0) is x and F.dropout(x, 0.0) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_no_grad_is_f_dropout_itself_unless_the_sampler_draws_other_masks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under no_grad nothing is kept for backward: the exact sampler's call is F.dropout (same output, same
    generator state after), with no packed path entered; the fast sampler still draws its own masks."""
    dropout_module = importlib.import_module("layers.dropout")
    packed_paths = []
    can_fuse = dropout_module.can_fuse
    monkeypatch.setattr(dropout_module, "can_fuse", lambda *args: packed_paths.append(1) or can_fuse(*args))
    x = leaf(64, 33)
    for grad_off in (torch.no_grad, torch.inference_mode):
        with grad_off():
            torch.manual_seed(0)
            a = PackedDropout(0.3)(x)
            state = torch.get_rng_state()
            torch.manual_seed(0)
            assert bits_equal(a, F.dropout(x, 0.3)) and torch.equal(torch.get_rng_state(), state)
    assert not packed_paths
    torch.manual_seed(0)
    fast = packed_dropout(x, 0.3, sampler="fast")
    with torch.no_grad():
        torch.manual_seed(0)
        assert bits_equal(packed_dropout(x, 0.3, sampler="fast"), fast.detach()) and packed_paths


def test_p_one_zeros_like_torch() -> None:
    x, grad = leaf(4, 4), leaf(4, 4, seed=1)
    ref, got = run(nn.Dropout(1.0), x, grad), run(PackedDropout(1.0), x, grad)
    assert all(bits_equal(a, b) for a, b in zip(got, ref, strict=True))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_p_out_of_range_raises_nn_dropouts_error(p: float) -> None:
    with pytest.raises(ValueError) as native:
        nn.Dropout(p)
    with pytest.raises(ValueError) as packed:
        PackedDropout(p)
    assert str(packed.value) == str(native.value)
    with pytest.raises(PackedBoolValueError, match=str(p)):
        packed_dropout(torch.ones(3), p)


def test_bad_options_and_dtypes_raise_clear_errors() -> None:
    with pytest.raises(PackedBoolValueError, match="bits=3"):
        PackedDropout(0.1, bits=3)
    with pytest.raises(PackedBoolValueError, match="storage='disk'"):
        PackedDropout(0.1, storage="disk")
    with pytest.raises(PackedBoolValueError, match="sampler='slow'"):
        packed_dropout(torch.ones(3), 0.1, sampler="slow")
    with pytest.raises(TypeError, match="torch.int64"):
        packed_dropout(torch.ones(3, dtype=torch.int64), 0.1)


def test_inplace_matches_nn_dropout_inplace() -> None:
    base = leaf(6, 10)
    outs = []
    for drop in (nn.Dropout(0.3, inplace=True), PackedDropout(0.3, inplace=True)):
        x = base.detach().clone().requires_grad_()
        torch.manual_seed(2)
        y = x * 1.0
        out = drop(y)
        assert out is y
        out.sum().backward()
        outs.append((out, x.grad))
    assert bits_equal(outs[0][0], outs[1][0]) and bits_equal(outs[0][1], outs[1][1])


def test_fast_sampler_keep_rate_and_determinism() -> None:
    x = torch.ones(256, 1000)
    for p in (0.1, 0.5, 0.9):
        torch.manual_seed(0)
        a = packed_dropout(x, p, sampler="fast")
        kept = (a != 0).double().mean().item()
        sigma = (p * (1 - p) / x.numel()) ** 0.5
        assert abs(kept - (1 - p)) < 5 * sigma + 2**-16  # keep probability is rounded to 2**-16
        torch.manual_seed(0)
        assert bits_equal(packed_dropout(x, p, sampler="fast"), a)
        assert not torch.equal(packed_dropout(x, p, sampler="fast"), a)  # the seed advances
    kept_per_column = (packed_dropout(x, 0.5, sampler="fast") != 0).double().mean(0)
    assert kept_per_column.sub(0.5).abs().max() < 0.12  # no column bias (256 rows per column)


def test_fast_sampler_gradient_uses_its_mask() -> None:
    x = leaf(37, 45)
    out = packed_dropout(x, 0.3, sampler="fast", bits=2)
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, (out != 0).float() / 0.7)


def test_training_200_steps_equals_nn_dropout() -> None:
    """Same seed, same data: losses and parameters torch.equal after 200 Adam steps."""

    def train(make_drop) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(20, 64),
            make_drop(0.1),
            nn.GELU(),
            nn.Linear(64, 64),
            make_drop(0.3),
            nn.Tanh(),
            nn.Linear(64, 3),
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        data = torch.randn(200, 16, 20, generator=torch.Generator().manual_seed(1))
        target = torch.randint(0, 3, (200, 16), generator=torch.Generator().manual_seed(2))
        losses = []
        for step in range(200):
            loss = F.cross_entropy(model(data[step]), target[step])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return losses, [p.detach() for p in model.parameters()]

    ref_losses, ref_params = train(nn.Dropout)
    for make in (
        PackedDropout,
        lambda p: PackedDropout(p, bits=4, unpack="cached"),
        lambda p: PackedDropout(p, storage="seeded"),
    ):
        losses, params = train(make)
        assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(params, ref_params, strict=True))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_bit_identical_to_nn_dropout(dtype: torch.dtype) -> None:
    x, grad = leaf(33, 75, dtype=dtype).cuda(), leaf(33, 75, dtype=dtype, seed=1).cuda()
    ref, got = [], []
    for drop, results in ((nn.Dropout(0.3), ref), (PackedDropout(0.3), got)):
        xi = x.detach().clone().requires_grad_()
        torch.cuda.manual_seed(7)
        out = drop(xi)
        out.backward(grad)
        results.extend([out, xi.grad, torch.cuda.get_rng_state()])
    assert all(bits_equal(a, b) for a, b in zip(got[:2], ref[:2], strict=True)) and torch.equal(
        got[2], ref[2]
    )


@pytest.mark.parametrize("storage", ["packed", "seeded"])
def test_non_contiguous_input_bit_identical(storage: str) -> None:
    """F.dropout draws into empty_like(input): a transposed input gets the numbers in memory order."""
    x, grad = leaf(24, 40).detach().t().requires_grad_(), leaf(40, 24, seed=1)
    ref = run(nn.Dropout(0.3), x, grad)
    got = run(PackedDropout(0.3, storage=storage), x, grad)
    assert all(bits_equal(a, b) for a, b in zip(got, ref, strict=True))
