"""Where the random bits of a stochastic mask come from, and how to draw the same bits again.

Two samplers, both driven by torch's default generator (so `torch.manual_seed` fixes them):

- ``"exact"``: torch's own Bernoulli. On CPU a bool ``bernoulli_`` is what ``native_dropout`` and
  ``F.dropout`` draw, so masks and the generator's state after the draw are bit-identical to
  ``nn.Dropout``; on CUDA the mask comes from ``native_dropout`` itself, which nn.Dropout calls there.
- ``"fast"``: a counter-based generator (Philox-4x64, keyed by one 64-bit seed taken from torch's
  generator, as FlashAttention does on GPU) that draws the mask directly in packed form on CPU
  (NOTE(fast-sampler) at `philox_packed_bernoulli`). Not the numbers nn.Dropout draws.

Each sampler has a `key` (what must be kept to draw the same mask again: the generator state for
"exact", the 8-byte seed for "fast"), `draw` (forward, advances torch's generator as usual) and
`redraw` (backward of ``storage="seeded"``: the same mask again from a private generator set from
the key, so torch's generator is untouched and other threads drawing meanwhile change nothing).

Under torch.compile the fast draw is one opaque op (``packedbool::philox_bernoulli``, a
`torch.library.custom_op`): the numpy Philox stream cannot be traced, and as an op it gives the
same bits compiled and eager for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from bittensor_core import Mask, kernels, packed_from_random_bytes
from bittensor_core.layout import packed_shape

Shape = torch.Size | tuple[int, ...]
_FAST_BITS = 16  # resolution of the fast sampler's keep probability


class ExactSampler:
    """torch's Bernoulli on the default generator; `key` is a snapshot of that generator."""

    name = "exact"

    def key(self, device: torch.device, *, replay: bool) -> torch.Tensor | None:
        if not replay:
            return None
        if device.type == "cpu":
            return torch.get_rng_state()
        return torch.get_device_module(device.type).get_rng_state(device)

    def draw(
        self, key: torch.Tensor | None, shape: Shape, keep: float, like: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        if key is None or device.type != "cpu":
            return self._bernoulli(shape, keep, like, device)
        # Seeded: draw from a private generator at the snapshot `key`, then move torch's generator
        # to where the draw left it (as if drawn there). Single-threaded this is nn.Dropout's draw;
        # with another thread drawing between snapshot and draw, the mask still is the key's mask.
        private = torch.Generator().set_state(key)
        mask = self._bernoulli(shape, keep, like, device, private)
        torch.set_rng_state(private.get_state())
        return mask

    def redraw(
        self, key: torch.Tensor, shape: Shape, keep: float, like: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        if device.type == "cpu":  # a private generator at the saved state: torch's is untouched
            return self._bernoulli(shape, keep, like, device, torch.Generator().set_state(key))
        # NOTE: native_dropout takes no generator, so on CUDA the device generator is rewound
        # (fork_rng restores it afterwards); this is not safe against other threads drawing on it.
        with torch.random.fork_rng(devices=[device], device_type=device.type):
            torch.get_device_module(device.type).set_rng_state(key, device)
            return self._bernoulli(shape, keep, like, device)

    @staticmethod
    def _bernoulli(
        shape: Shape,
        keep: float,
        like: torch.Tensor,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # A mask of the input's own shape takes its strides, as F.dropout's empty_like(input) does:
        # the generator fills memory in order, so a transposed input gets the same numbers.
        base = like if tuple(shape) == tuple(like.shape) else torch.empty(shape, device="meta")
        if device.type == "cpu":
            # native_dropout_cpu's own draw: one bool bernoulli_ (F.dropout draws the same numbers).
            return torch.empty_like(base, dtype=torch.bool, device=device).bernoulli_(
                keep, generator=generator
            )
        # On CUDA nn.Dropout is native_dropout's fused kernel: take its mask to follow its stream.
        return torch.native_dropout(
            torch.empty_like(base, dtype=like.dtype, device=device), 1.0 - keep, True
        )[1]


class FastSampler:
    """Counter-based Philox keyed by a seed drawn from torch's CPU generator; `key` is the seed."""

    name = "fast"

    def key(self, device: torch.device, *, replay: bool) -> torch.Tensor:
        return torch.randint(0, 2**63 - 1, (), dtype=torch.int64)  # out-of-place: dynamo traces it

    def draw(
        self, key: torch.Tensor, shape: Shape, keep: float, like: torch.Tensor, device: torch.device
    ) -> Mask:
        return Mask.from_rows(philox_bernoulli(key, list(shape), float(keep), device), shape, 1)

    redraw = draw  # a pure function of the key


@torch.library.custom_op("packedbool::philox_bernoulli", mutates_args=())
def philox_bernoulli(
    key: torch.Tensor, shape: Sequence[int], keep: float, device: torch.device
) -> torch.Tensor:
    """The fast sampler's Bernoulli(keep) mask of `shape` on `device` as 1-bit packed uint8 rows.

    `key`: 0-dim int64 seed. CPU: `philox_packed_bernoulli`; elsewhere torch's Philox generator
    (CUDA's generator is Philox too) and a pack. An opaque op, so compiled code draws the same bits.
    """
    seed = int(key) & (2**64 - 1)
    if device.type == "cpu":
        return philox_packed_bernoulli(seed, tuple(shape), keep)
    gen = torch.Generator(device=device).manual_seed(seed)
    return kernels.pack(torch.rand(shape, generator=gen, device=device) < keep, 1)


@philox_bernoulli.register_fake
def _(key: torch.Tensor, shape: Sequence[int], keep: float, device: torch.device) -> torch.Tensor:
    return torch.empty(packed_shape(tuple(shape), 1), dtype=torch.uint8, device=device)


def philox_packed_bernoulli(seed: int, shape: Shape, keep: float) -> torch.Tensor:
    """A Bernoulli(keep) mask of `shape`, drawn straight into 1-bit packed rows.

    NOTE(fast-sampler): P(bit) = round(keep * 2**16) / 2**16 (keep is rounded to a multiple of
    2**-16). With t that integer, start from 0 and for each binary digit of t from the lowest, OR
    (digit 1) or AND (digit 0) in a fresh random word: 64 mask bits cost at most 16 random words and
    no compare or packing pass. The words' bits are laid into packed rows by
    `bittensor_core.packed_from_random_bytes`.
    """
    shape = tuple(shape)
    words = -(-math.prod(packed_shape(shape, 1)) // 8)
    t = round(keep * (1 << _FAST_BITS))
    if t <= 0 or t >= 1 << _FAST_BITS:
        fill = np.uint64(0 if t <= 0 else 2**64 - 1)
        acc = np.full(words, fill, dtype=np.uint64)
    else:
        low = (t & -t).bit_length() - 1  # trailing zero digits: AND into an all-zero word is a no-op
        raw = _philox(seed).random_raw(words * (_FAST_BITS - low)).reshape(_FAST_BITS - low, words)
        acc = raw[0].copy()  # the lowest set digit: OR into zeros = the word itself
        for i in range(low + 1, _FAST_BITS):
            op = np.bitwise_or if (t >> i) & 1 else np.bitwise_and
            op(acc, raw[i - low], out=acc)
    return packed_from_random_bytes(torch.from_numpy(acc.view(np.uint8)), shape)


def _philox(seed: int) -> np.random.BitGenerator:
    return np.random.Philox(key=seed)


def draw_packed(
    sampler: str, key: torch.Tensor | None, shape: Shape, keep: float, like: torch.Tensor, bits: int = 1
) -> torch.Tensor:
    """A Bernoulli(keep) mask of `shape` drawn by `sampler`, as plain packed uint8 rows.

    The bytes follow `bittensor_core.layout` at width `bits` (``layout.packed_shape(shape, bits)``),
    so `bittensor_core.unpack_scaled` decodes them. `key` as for the sampler's `draw` (None for
    "exact" unless the draw must be replayed).
    """
    drawn = get_sampler(sampler).draw(key, shape, keep, like, like.device)
    if isinstance(drawn, Mask):  # the fast sampler's rows
        return Mask.of(drawn, bits).rows()
    return kernels.pack(drawn, bits)  # rows straight from the bool draw: one pass, never flat then rows


_SAMPLERS = {"exact": ExactSampler(), "fast": FastSampler()}


def get_sampler(name: str) -> ExactSampler | FastSampler:
    """The sampler called `name` ("exact" or "fast"); validate `name` with `MaskStorage` first."""
    return _SAMPLERS[name]
