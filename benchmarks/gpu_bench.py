"""GPU figures for the Triton kernels (issue 6), printed as markdown tables.

Run on a CUDA machine from the repository root (``pip install -e .[triton]``)::

    python benchmarks/gpu_bench.py                    # pack bandwidth + dropout fwd/bwd, fp32 and bf16
    python benchmarks/gpu_bench.py --json gpu.json    # also keep the raw figures

It measures, in one process and against the native path timed in the same run:
- pack / unpack / popcount bandwidth as a fraction of the GPU's copy bandwidth (``dst.copy_(src)``
  of the same bool tensor; bytes moved = bytes read + bytes written; target >= 70 % for pack);
- fused packed dropout vs ``torch.native_dropout`` / ``native_dropout_backward``, forward,
  backward and both, kernels alone and through autograd, fp32 and bf16 (target packed <= 1.0x).

Times are medians of CUDA-event timings by ``triton.testing.do_bench`` (L2 flushed between runs).
``--smoke`` runs the same code at tiny sizes on CPU under TRITON_INTERPRET=1 (the test suite does
this so the script cannot rot); its timings mean nothing. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bittensor_core.kernels import torch_ref  # noqa: E402
from layers.kernels.dropout_params import draw_seed  # noqa: E402

Timer = Callable[[Callable[[], object]], float]


def make_timer(device: torch.device, rep_ms: int) -> Timer:
    """fn -> median milliseconds per call."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")

    def once(fn: Callable[[], object]) -> float:  # smoke mode only
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return once


class _FusedDropout(torch.autograd.Function):
    """The autograd wrapper a packed dropout layer uses: saves only the 1-bit mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        from layers.kernels.triton_dropout import fused_dropout_forward

        y, packed = fused_dropout_forward(x, p, seed)
        ctx.save_for_backward(packed)
        ctx.p = p
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        from layers.kernels.triton_dropout import fused_dropout_backward

        (packed,) = ctx.saved_tensors
        return fused_dropout_backward(grad, packed, ctx.p), None, None


def bench_pack(numel: int, device: torch.device, time_ms: Timer) -> list[dict]:
    """Bandwidth of the pack kernels and of a plain copy of the same bool tensor."""
    from bittensor_core.kernels import triton_pack

    mask = torch.rand(numel, device=device) < 0.5
    dst = torch.empty_like(mask)
    copy_ms = time_ms(lambda: dst.copy_(mask))
    copy_gbs = 2 * numel / copy_ms / 1e6
    rows = [{"kernel": "copy_ (bool, baseline)", "bytes": 2 * numel, "ms": copy_ms}]

    def add(name: str, fn: Callable[[], object], nbytes: int) -> None:
        rows.append({"kernel": name, "bytes": nbytes, "ms": time_ms(fn)})

    for bits in (1, 2, 4):
        packed = triton_pack.pack(mask, bits)
        add(f"pack {bits}-bit", lambda b=bits: triton_pack.pack(mask, b), numel + packed.numel())
        add(
            f"unpack {bits}-bit",
            lambda b=bits, pk=packed: triton_pack.unpack(pk, mask.shape, b),
            numel + packed.numel(),
        )
    packed = triton_pack.pack(mask, 1)
    add("popcount 1-bit", lambda: triton_pack.popcount(packed), packed.numel())
    add("pack 1-bit, torch_ref (pure torch)", lambda: torch_ref.pack(mask, 1), numel + packed.numel())
    ragged = mask[: numel // 1000 * 1000].view(-1, 1000)  # rows not a multiple of 8: per-row padding
    add(
        "pack 1-bit, rows of 1000",
        lambda: triton_pack.pack(ragged, 1),
        ragged.numel() + triton_pack.pack(ragged, 1).numel(),
    )
    for row in rows:
        row["GB/s"] = row["bytes"] / row["ms"] / 1e6
        row["of copy"] = row["GB/s"] / copy_gbs
    return rows


def bench_dropout(
    numel: int, dtype: torch.dtype, p: float, device: torch.device, time_ms: Timer
) -> list[dict]:
    """Packed fused dropout vs torch's native dropout: forward, backward, both, and via autograd."""
    from layers.kernels.triton_dropout import fused_dropout_backward, fused_dropout_forward

    x = torch.randn(numel, device=device, dtype=dtype)
    grad = torch.randn_like(x)
    seed, scale = draw_seed(), 1.0 / (1.0 - p)
    _, bool_mask = torch.native_dropout(x, p, True)
    _, packed = fused_dropout_forward(x, p, seed)
    native_bwd = torch.ops.aten.native_dropout_backward
    x_leaf = x.clone().requires_grad_()

    def native_both() -> None:
        _, m = torch.native_dropout(x, p, True)
        native_bwd(grad, m, scale)

    def fused_both() -> None:
        _, pk = fused_dropout_forward(x, p, seed)
        fused_dropout_backward(grad, pk, p)

    cases = {
        "forward": (lambda: torch.native_dropout(x, p, True), lambda: fused_dropout_forward(x, p, seed)),
        "backward": (
            lambda: native_bwd(grad, bool_mask, scale),
            lambda: fused_dropout_backward(grad, packed, p),
        ),
        "fwd+bwd (kernels)": (native_both, fused_both),
        "fwd+bwd (autograd)": (  # autograd.grad: no accumulation into x_leaf.grad between runs
            lambda: torch.autograd.grad(torch.nn.functional.dropout(x_leaf, p, True), x_leaf, grad),
            lambda: torch.autograd.grad(_FusedDropout.apply(x_leaf, p, seed), x_leaf, grad),
        ),
    }
    rows = []
    for step, (native, fused) in cases.items():
        native_ms, packed_ms = time_ms(native), time_ms(fused)
        rows.append(
            {
                "dtype": str(dtype).removeprefix("torch."),
                "numel": numel,
                "step": step,
                "native ms": native_ms,
                "packed ms": packed_ms,
                "packed / native": packed_ms / native_ms,
                "mask bytes native": bool_mask.numel(),
                "mask bytes packed": packed.numel(),
            }
        )
    return rows


def _fmt(col: str, v: object) -> str:
    if col == "of copy":
        return f"{v:.1%}"
    if col == "packed / native":
        return f"{v:.3f}x"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(rows: Sequence[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(c, r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack-numel", type=int, default=2**27, help="mask elements for the pack kernels")
    parser.add_argument(
        "--dropout-numel",
        type=int,
        nargs="+",
        default=[2**22, 2**25],
        help="elements per dropout call (4 M ~ BERT-large hidden b8 s512; 33.5 M ~ its attention probs)",
    )
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--rep-ms", type=int, default=200, help="do_bench timing budget per measurement")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU under TRITON_INTERPRET=1")
    args = parser.parse_args(argv)

    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            print("--smoke needs TRITON_INTERPRET=1 set before triton is imported.")
            return 2
        device, args.pack_numel, args.dropout_numel = torch.device("cpu"), 8192, [1024]
        header = "smoke run on CPU under the Triton interpreter: timings are meaningless"
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        header = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {_triton_version()}"
    else:
        print("No CUDA device: GPU figures cannot be taken here (use --smoke to check the script on CPU).")
        return 2

    time_ms = make_timer(device, args.rep_ms)
    pack_rows = bench_pack(args.pack_numel, device, time_ms)
    dropout_rows = [
        row
        for numel in args.dropout_numel
        for dtype in (torch.float32, torch.bfloat16)
        for row in bench_dropout(numel, dtype, args.p, device, time_ms)
    ]
    print(f"# Triton kernels: {header}\n")
    print(f"## Pack kernels ({args.pack_numel} elements; bandwidth = bytes read + written)\n")
    print(markdown(pack_rows))
    print(f"\n## Dropout p={args.p}: packed fused (Philox, 1-bit mask) vs torch.native_dropout (bool mask)\n")
    print(markdown(dropout_rows))
    print("\n## Against the issue's targets\n")
    pack1 = next(r for r in pack_rows if r["kernel"] == "pack 1-bit")
    print(f"- pack 1-bit: {pack1['of copy']:.1%} of copy bandwidth (target >= 70 %)")
    for r in dropout_rows:
        if r["step"] == "fwd+bwd (kernels)":
            print(
                f"- dropout fwd+bwd {r['dtype']}, {r['numel']:,} elements: packed / native "
                f"{r['packed / native']:.3f}x (target <= 1.0x)"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"device": header, "pack": pack_rows, "dropout": dropout_rows}, indent=2)
        )
    return 0


def _triton_version() -> str:
    import triton

    return triton.__version__


if __name__ == "__main__":
    raise SystemExit(main())
