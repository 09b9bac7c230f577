"""Fused rotary embedding for q and k in Meta's Llama layout: the pairs (x[2i], x[2i+1]) of each
head are rotated by the angle of their position, cos/sin tables of shape (≥ seq, head_dim / 2).

One program per (batch, position) row rotates every head of that row, loading the position's
cos and sin once. Backward is the same rotation by the opposite angle (sin negated), so it
reuses the forward kernel. q and k may have different head counts (grouped-query attention).
"""

import torch

from kernels import reference
from kernels._common import KernelInputError, check_dtype, check_same, mark, needs_grad, tl, triton, use_triton


@triton.jit
def _rope_kernel(X, COS, SIN, Y, seq_len, n_heads, head_dim, half, sign, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    pos = row % seq_len
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < n_heads) & (d < head_dim)
    # Whole heads are loaded contiguously (coalesced), then split into their (even, odd) pairs.
    offs = row * n_heads * head_dim + h * head_dim + d
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    x1, x2 = tl.split(tl.reshape(x, (BLOCK_H, BLOCK_D // 2, 2)))
    i = tl.arange(0, BLOCK_D // 2)[None, :]
    c = tl.load(COS + pos * half + i, mask=i < half, other=0.0)
    s = tl.load(SIN + pos * half + i, mask=i < half, other=0.0) * sign
    y = tl.reshape(tl.join(x1 * c - x2 * s, x1 * s + x2 * c), (BLOCK_H, BLOCK_D))
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """x (contiguous) rotated by the angle of its position; sign -1 rotates back (the backward)."""
    batch, seq, heads, head_dim = x.shape
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel():
        _rope_kernel[(batch * seq,)](
            x, cos, sin, y, seq, heads, head_dim, head_dim // 2, sign,
            BLOCK_H=triton.next_power_of_2(heads), BLOCK_D=triton.next_power_of_2(head_dim), num_warps=4,
        )  # fmt: skip
    return y


def _rotate_pair(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.float().contiguous(), sin.float().contiguous()
    return _rotate(q.contiguous(), cos, sin, sign), _rotate(k.contiguous(), cos, sin, sign)


class _Rope(torch.autograd.Function):
    """The eager path: the launchers without the custom op's dispatch layers."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        ctx.save_for_backward(cos, sin)
        return _rotate(q, cos, sin, 1.0), _rotate(k, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(dq.contiguous(), cos, sin, -1.0), _rotate(dk.contiguous(), cos, sin, -1.0), None, None


# The same launchers as torch custom ops, for torch.compile: the graph holds them as nodes.
@torch.library.custom_op("exaharness::rope_fwd", mutates_args=())
def rope_fwd(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton forward as a torch op: rotated copies of q and k (contiguous)."""
    mark("rope", "triton")
    return _rotate_pair(q, k, cos, sin, 1.0)


@torch.library.custom_op("exaharness::rope_bwd", mutates_args=())
def rope_bwd(
    dq: torch.Tensor, dk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton backward as a torch op: dq and dk rotated back (the opposite angle)."""
    return _rotate_pair(dq, dk, cos, sin, -1.0)


@rope_fwd.register_fake
def _(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape)


@rope_bwd.register_fake
def _(dq: torch.Tensor, dk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return dq.new_empty(dq.shape), dk.new_empty(dk.shape)


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    _q, _k, cos, sin = inputs
    ctx.save_for_backward(cos, sin)


def _op_backward(ctx, dq: torch.Tensor, dk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
    return *rope_bwd(dq, dk, *ctx.saved_tensors), None, None


rope_fwd.register_autograd(_op_backward, setup_context=_setup_context)


def _check(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    check_dtype("rope", "q", q)
    check_same("rope", q=q, k=k)
    if q.dim() != 4 or k.dim() != 4:
        raise KernelInputError(f"rope: q {tuple(q.shape)} and k {tuple(k.shape)} must be (batch, seq, heads, head_dim)")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise KernelInputError(f"rope: q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch, seq or head_dim")
    head_dim = q.shape[3]
    if head_dim % 2:
        raise KernelInputError(f"rope: head_dim {head_dim} must be even (pairs are rotated)")
    for name, table in (("cos", cos), ("sin", sin)):
        if table.dim() != 2 or table.shape[0] < q.shape[1] or table.shape[1] != head_dim // 2:
            # The message is built only here: formatting shapes while dynamo traces would
            # specialise them (a recompile per sequence length under dynamic shapes).
            want = f"(>= {q.shape[1]}, {head_dim // 2})"
            raise KernelInputError(f"rope: {name} is {tuple(table.shape)}; it must be (positions, head_dim/2) = {want}")
        if table.device != q.device:
            raise KernelInputError(f"rope: {name} is on {table.device} but q is on {q.device}")


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of q (batch, seq, heads, head_dim) and k (batch, seq, kv_heads, head_dim).

    cos, sin: (positions ≥ seq, head_dim / 2) tables, read in float32 (as from
    `harness.train.model.rope_tables`). q and k: one dtype (float32, bfloat16, float16);
    non-contiguous inputs are made contiguous. Returns rotated copies; gradients for q and k.
    Under `torch.compile` the Triton path is the custom op `exaharness::rope_fwd` (backward
    `exaharness::rope_bwd`).
    """
    _check(q, k, cos, sin)
    if not use_triton(q, k, cos, sin):
        mark("rope", "torch")
        return reference.rope(q, k, cos, sin)
    mark("rope", "triton")
    cos32, sin32 = cos.float().contiguous(), sin.float().contiguous()
    q, k = q.contiguous(), k.contiguous()
    if torch.compiler.is_compiling():
        return rope_fwd(q, k, cos32, sin32)
    if not needs_grad(q, k):
        return _rotate(q, cos32, sin32, 1.0), _rotate(k, cos32, sin32, 1.0)  # no autograd bookkeeping
    return _Rope.apply(q, k, cos32, sin32)
