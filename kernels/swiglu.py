"""Fused SwiGLU: y = silu(gate) · up, element-wise, with its backward recomputed from gate and up
(nothing else is saved): dgate = dy · up · σ(g) · (1 + g · (1 − σ(g))), dup = dy · silu(g).
Each program handles BLOCK consecutive elements; float32 inside.
"""

import torch

from kernels import reference
from kernels._common import KernelInputError, check_dtype, check_same, mark, needs_grad, tl, triton, use_triton

BLOCK = 1024


@triton.jit
def _swiglu_fwd(G, U, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, (g * tl.sigmoid(g) * u).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd(DY, G, U, DG, DU, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    tl.store(DU + offs, (dy * silu).to(DU.dtype.element_ty), mask=mask)
    tl.store(DG + offs, (dy * u * sig * (1.0 + g * (1.0 - sig))).to(DG.dtype.element_ty), mask=mask)


def _forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    y = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    n = gate.numel()
    if n:
        _swiglu_fwd[(triton.cdiv(n, BLOCK),)](gate, up, y, n, BLOCK=BLOCK, num_warps=4)
    return y


def _backward(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dgate and dup, recomputed from gate and up."""
    dy, gate, up = dy.contiguous(), gate.contiguous(), up.contiguous()
    dg = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    du = torch.empty(up.shape, dtype=up.dtype, device=up.device)
    n = gate.numel()
    if n:
        _swiglu_bwd[(triton.cdiv(n, BLOCK),)](dy, gate, up, dg, du, n, BLOCK=BLOCK, num_warps=4)
    return dg, du


class _SwiGLU(torch.autograd.Function):
    """The eager path: the launchers without the custom op's dispatch layers."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return _forward(gate, up)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        return _backward(dy, *ctx.saved_tensors)


# The same launchers as torch custom ops, for torch.compile: the graph holds them as nodes.
@torch.library.custom_op("exaharness::swiglu_fwd", mutates_args=())
def swiglu_fwd(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) · up (contiguous, gate's dtype), through the Triton kernel."""
    mark("swiglu", "triton")
    return _forward(gate.contiguous(), up.contiguous())


@swiglu_fwd.register_fake
def _(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return gate.new_empty(gate.shape)


@torch.library.custom_op("exaharness::swiglu_bwd", mutates_args=())
def swiglu_bwd(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dgate and dup, through the Triton kernel."""
    return _backward(dy, gate, up)


@swiglu_bwd.register_fake
def _(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return gate.new_empty(gate.shape), up.new_empty(up.shape)


def _setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _op_backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return swiglu_bwd(dy, *ctx.saved_tensors)


swiglu_fwd.register_autograd(_op_backward, setup_context=_setup_context)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) · up for two tensors of one shape and dtype (float32, bfloat16, float16).

    Non-contiguous inputs are made contiguous (a copy). Gradients for gate and up. Under
    `torch.compile` the Triton path is the custom op `exaharness::swiglu_fwd` (backward
    `exaharness::swiglu_bwd`).
    """
    check_dtype("swiglu", "gate", gate)
    check_same("swiglu", gate=gate, up=up)
    if gate.shape != up.shape:
        raise KernelInputError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    if not use_triton(gate, up):
        mark("swiglu", "torch")
        return reference.swiglu(gate, up)
    mark("swiglu", "triton")
    gate, up = gate.contiguous(), up.contiguous()
    if torch.compiler.is_compiling():
        return swiglu_fwd(gate, up)
    if not needs_grad(gate, up):
        return _forward(gate, up)  # no autograd bookkeeping
    return _SwiGLU.apply(gate, up)
