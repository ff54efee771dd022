"""`grouped_linear`: one linear layer per expert on expert-sorted rows, as ops torch.compile can hold.

The rows of an (S, K) input are sorted by expert; ``offs`` (E,) int32 holds the cumulative row
count of each expert. torch's ``_grouped_mm`` computes every expert's matmul on its rows with
fixed-size tensors (no Python loop over the experts present, no ``.tolist()``), but its
fake-tensor rule accepts only bfloat16, so dynamo cannot trace it for float32. `grouped_mm`
wraps it in a ``torch.library.custom_op`` (an opaque node in the compiled graph) whose backward
is a second custom op computing the very products of torch's own derivative formula for
``_grouped_mm`` (``_grouped_mm_mat1_backward`` / ``_grouped_mm_mat2_backward``): eager and
compiled run the same aten calls, so their results are bit-identical.

Example:
    >>> offs = torch.tensor([3, 3, 8], dtype=torch.int32)       # experts 0, 1, 2 own 3, 0, 5 rows
    >>> grouped_linear(torch.randn(8, 16), torch.randn(3, 32, 16), offs).shape
    torch.Size([8, 32])
"""

from __future__ import annotations

import torch

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernel_takes(t: torch.Tensor) -> bool:
    """torch's _grouped_mm wants these dtypes, 16-byte aligned data and strides."""
    aligned = all(s == 1 or s * t.element_size() % 16 == 0 for s in t.stride())
    return t.dtype in KERNEL_DTYPES and t.data_ptr() % 16 == 0 and aligned


def _grouped(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """``torch._grouped_mm(a, b, offs=offs)``; where it refuses the inputs (float64, odd sizes), the
    per-group ``mm`` on slices its CPU kernel runs (2d x 3d: groups of rows; 3d x 2d: of columns;
    2d x 2d: of the shared dim)."""
    if _kernel_takes(a) and _kernel_takes(b):
        return torch._grouped_mm(a, b, offs=offs)
    ends = offs.tolist()  # inside the custom op: eager code, never traced
    starts = [0, *ends[:-1]]
    if a.dim() == 2 and b.dim() == 3:
        out = a.new_empty(a.shape[0], b.shape[-1])
        for g, (s, e) in enumerate(zip(starts, ends, strict=True)):
            torch.mm(a[s:e], b[g], out=out[s:e])
    elif a.dim() == 3:
        out = a.new_empty(a.shape[1], b.shape[-1])
        for g, (s, e) in enumerate(zip(starts, ends, strict=True)):
            torch.mm(a[g], b[:, s:e], out=out[:, s:e])
    else:
        out = a.new_empty(len(ends), a.shape[0], b.shape[-1])
        for g, (s, e) in enumerate(zip(starts, ends, strict=True)):
            torch.mm(a[:, s:e], b[s:e], out=out[g])
    return out


@torch.library.custom_op("packedbool::grouped_mm", mutates_args=())
def grouped_mm(
    x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """(S, K) rows sorted by expert @ (E, K, N) per-expert weights (+ (E, N) per-expert bias) -> (S, N)."""
    out = _grouped(x, w, offs)
    if bias is not None:
        out.add_(bias[_row_experts(offs, x.shape[0])])  # transformers: out.add_(bias[clamped sorted ids])
    return out


@grouped_mm.register_fake
def _(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape[0], w.shape[-1])


def _row_experts(offs: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The expert of each sorted row; rows past ``offs[-1]`` (expert-parallel sentinels) get the
    last expert, as transformers' clamped ids do."""
    rows = torch.arange(num_rows, device=offs.device, dtype=offs.dtype)
    return torch.searchsorted(offs, rows, right=True).clamp_(max=offs.shape[0] - 1)


def _column_major(t: torch.Tensor) -> bool:
    """The layout test of torch's ``_grouped_mm`` derivative formulas."""
    return t.stride(-2) == 1 and t.stride(-1) == t.shape[-2]


@torch.library.custom_op("packedbool::grouped_mm_backward", mutates_args=())
def _grouped_mm_backward(
    x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor, grad: torch.Tensor, bias_rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if _column_major(x):
        grad_x = _grouped(w, grad.transpose(-2, -1), offs).transpose(-2, -1)
    else:
        grad_x = _grouped(grad, w.transpose(-2, -1), offs)
    if _column_major(w):
        grad_w = _grouped(grad.transpose(-2, -1), x, offs).transpose(-2, -1)
    else:
        grad_w = _grouped(x.transpose(-2, -1), grad, offs)
    grad_bias = grad.new_zeros(bias_rows, grad.shape[-1])  # 0 rows: no bias
    if bias_rows:  # autograd's backward of bias[ids]: index_put_ with accumulate, in row order
        grad_bias.index_put_((_row_experts(offs, grad.shape[0]),), grad, accumulate=True)
    # custom ops return fresh contiguous tensors (the fake's strides)
    return grad_x.contiguous(), grad_w.contiguous(), grad_bias


@_grouped_mm_backward.register_fake
def _(x, w, offs, grad, bias_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    contiguous = torch.contiguous_format
    grad_bias = grad.new_empty(bias_rows, grad.shape[-1])
    return (
        torch.empty_like(x, memory_format=contiguous),
        torch.empty_like(w, memory_format=contiguous),
        grad_bias,
    )


def _setup_context(ctx, inputs, output) -> None:
    x, w, offs, bias = inputs
    ctx.save_for_backward(x, w, offs)
    ctx.bias_rows = 0 if bias is None else bias.shape[0]


def _backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, torch.Tensor | None]:
    x, w, offs = ctx.saved_tensors
    grad_x, grad_w, grad_bias = _grouped_mm_backward(x, w, offs, grad.contiguous(), ctx.bias_rows)
    return grad_x, grad_w, None, grad_bias if ctx.bias_rows else None


grouped_mm.register_autograd(_backward, setup_context=_setup_context)


def grouped_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    offs: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    is_transposed: bool = False,
) -> torch.Tensor:
    """Per-expert ``F.linear`` of expert-sorted rows, as transformers' grouped experts compute it.

    Args:
        x: (S, K) rows, sorted by expert.
        weight: (E, N, K) per-expert weights, or (E, K, N) with ``is_transposed``.
        offs: (E,) int32 cumulative row counts (``offs[-1] <= S``; later rows are left as the kernel leaves them).
        bias: optional (E, N) per-expert bias.

    Returns:
        (S, N).
    """
    w = weight if is_transposed else weight.transpose(-2, -1)
    return grouped_mm(x.to(w.dtype), w, offs, bias)
