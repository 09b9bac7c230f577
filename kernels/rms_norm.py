"""Fused RMSNorm: y = x · rstd · w with rstd = 1 / sqrt(mean(x²) + eps) over the last dimension.

Forward: one program per row reads x once and writes y and rstd (float32, kept for backward).
Backward: each program walks a contiguous range of rows, writes dx and keeps a float32 partial
sum of dw in registers, so dw costs one (programs × hidden) reduction instead of an atomic per
row. Accumulation is float32 whatever the input dtype.
"""

import torch

from kernels import reference
from kernels._common import (
    KernelInputError,
    check_dtype,
    check_same,
    mark,
    needs_grad,
    num_warps,
    programs,
    tl,
    triton,
    use_triton,
)

MAX_HIDDEN = 65536  # one row must fit one block


@triton.jit
def _rms_norm_fwd(X, W, Y, RSTD, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(RSTD + row, rstd)
    tl.store(Y + row * n_cols + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd(DY, X, W, RSTD, DX, DW_PARTIAL, n_rows, n_cols, rows_per_program, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    start = pid * rows_per_program
    end = tl.minimum(start + rows_per_program, n_rows)
    # Pointers advance row by row (64-bit pointer arithmetic: no int32 overflow on big tensors).
    row_offset = start.to(tl.int64) * n_cols
    X += row_offset
    DY += row_offset
    DX += row_offset
    for row in range(start, end):
        x = tl.load(X + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        x_hat = x * rstd
        wdy = w * dy
        # d/dx of x·rstd: rstd · (wdy − x̂ · mean(wdy · x̂))
        c = tl.sum(wdy * x_hat, axis=0) / n_cols
        tl.store(DX + cols, ((wdy - x_hat * c) * rstd).to(DX.dtype.element_ty), mask=mask)
        dw += dy * x_hat
        X += n_cols
        DY += n_cols
        DX += n_cols
    tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw, mask=mask)


def _forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y (x's shape) and rstd (float32, x's leading shape) of a contiguous x and weight."""
    x2 = x.view(-1, x.shape[-1])
    rows, cols = x2.shape
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rstd = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(cols)
    if rows:
        _rms_norm_fwd[(rows,)](x2, weight, y, rstd, cols, eps, BLOCK=block, num_warps=num_warps(block))
    return y, rstd


def _backward(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """dx (x's shape and dtype) and dweight (weight's)."""
    x2 = x.contiguous().view(-1, x.shape[-1])
    rows, cols = x2.shape
    dy2 = dy.contiguous().view(rows, cols)
    dx = torch.empty_like(x2)
    grid = programs(x2.device, rows)
    partial = torch.zeros(grid, cols, dtype=torch.float32, device=x2.device)
    block = triton.next_power_of_2(cols)
    if rows:
        _rms_norm_bwd[(grid,)](
            dy2, x2, weight.contiguous(), rstd.contiguous(), dx, partial, rows, cols, triton.cdiv(rows, grid),
            BLOCK=block, num_warps=num_warps(block),
        )  # fmt: skip
    return dx.view(x.shape), partial.sum(0).to(weight.dtype)


class _RMSNorm(torch.autograd.Function):
    """The eager path: the launchers without the custom op's dispatch layers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = _forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        return *_backward(dy, *ctx.saved_tensors), None


# The same launchers as torch custom ops, for torch.compile: the graph holds them as nodes.
@torch.library.custom_op("exaharness::rms_norm_fwd", mutates_args=())
def rms_norm_fwd(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y (x's shape and dtype) and rstd (float32, x's leading shape), through the Triton kernel."""
    mark("rms_norm", "triton")
    return _forward(x.contiguous(), weight.contiguous(), eps)


@rms_norm_fwd.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("exaharness::rms_norm_bwd", mutates_args=())
def rms_norm_bwd(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """dx and dweight, through the Triton kernel."""
    return _backward(dy, x, weight, rstd)


@rms_norm_bwd.register_fake
def _(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    x, weight, _eps = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.mark_non_differentiable(output[1])


def _op_backward(ctx, dy: torch.Tensor, _drstd: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, None]:
    return *rms_norm_bwd(dy, *ctx.saved_tensors), None


rms_norm_fwd.register_autograd(_op_backward, setup_context=_setup_context)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension of x (any leading shape) with a weight of that size.

    float32, bfloat16 or float16, the same for x and weight; float32 accumulation; the result
    has x's dtype. Non-contiguous inputs are made contiguous (a copy). Gradients for x and weight.
    Under `torch.compile` the Triton path is the custom op `exaharness::rms_norm_fwd` (backward
    `exaharness::rms_norm_bwd`), and the checks here run while dynamo traces.
    """
    check_dtype("rms_norm", "x", x)
    check_same("rms_norm", x=x, weight=weight)
    if weight.dim() != 1 or x.dim() == 0 or weight.shape[0] != x.shape[-1]:
        raise KernelInputError(
            f"rms_norm: weight {tuple(weight.shape)} must be (hidden,) with hidden = x's last dimension "
            f"({tuple(x.shape)})"
        )
    if not use_triton(x, weight):
        mark("rms_norm", "torch")
        return reference.rms_norm(x, weight, eps)
    if x.shape[-1] > MAX_HIDDEN:
        raise KernelInputError(f"rms_norm: hidden size {x.shape[-1]} is above the kernel's limit of {MAX_HIDDEN}")
    mark("rms_norm", "triton")
    x, weight = x.contiguous(), weight.contiguous()
    if torch.compiler.is_compiling():
        return rms_norm_fwd(x, weight, float(eps))[0]
    if not needs_grad(x, weight):
        return _forward(x, weight, float(eps))[0]  # no autograd bookkeeping
    return _RMSNorm.apply(x, weight, float(eps))
