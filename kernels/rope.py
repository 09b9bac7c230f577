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
    batch, seq, heads, head_dim = x.shape
    y = torch.empty_like(x)
    if x.numel():
        _rope_kernel[(batch * seq,)](
            x, cos, sin, y, seq, heads, head_dim, head_dim // 2, sign,
            BLOCK_H=triton.next_power_of_2(heads), BLOCK_D=triton.next_power_of_2(head_dim), num_warps=4,
        )  # fmt: skip
    return y


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        ctx.save_for_backward(cos, sin)
        return _rotate(q, cos, sin, 1.0), _rotate(k, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(dq.contiguous(), cos, sin, -1.0), _rotate(dk.contiguous(), cos, sin, -1.0), None, None


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
    want = f"(>= {q.shape[1]}, {head_dim // 2})"
    for name, table in (("cos", cos), ("sin", sin)):
        if table.dim() != 2 or table.shape[0] < q.shape[1] or table.shape[1] != head_dim // 2:
            raise KernelInputError(f"rope: {name} is {tuple(table.shape)}; it must be (positions, head_dim/2) = {want}")
        if table.device != q.device:
            raise KernelInputError(f"rope: {name} is on {table.device} but q is on {q.device}")


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of q (batch, seq, heads, head_dim) and k (batch, seq, kv_heads, head_dim).

    cos, sin: (positions ≥ seq, head_dim / 2) tables, read in float32 (as from
    `harness.train.model.rope_tables`). q and k: one dtype (float32, bfloat16, float16);
    non-contiguous inputs are made contiguous. Returns rotated copies; gradients for q and k.
    """
    _check(q, k, cos, sin)
    if not use_triton(q, k, cos, sin):
        mark("rope", "torch")
        return reference.rope(q, k, cos, sin)
    mark("rope", "triton")
    cos32, sin32 = cos.float().contiguous(), sin.float().contiguous()
    q, k = q.contiguous(), k.contiguous()
    if not needs_grad(q, k):
        return _rotate(q, cos32, sin32, 1.0), _rotate(k, cos32, sin32, 1.0)  # no autograd bookkeeping
    return _Rope.apply(q, k, cos32, sin32)
