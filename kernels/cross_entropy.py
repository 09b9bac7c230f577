"""Fused linear cross-entropy: loss = mean over non-ignored targets of CE(hidden @ weightᵀ),
computed in chunks of rows so the (tokens × vocab) logits never exist at once.

For each chunk the logits are formed in the input dtype, a kernel computes every row's
log-sum-exp online (one pass), writes the row's loss and then overwrites the logits in place
with their gradient (softmax − one-hot) / n_valid; two matmuls turn that into the chunk's
grad_hidden and its share of grad_weight (accumulated in float32). The gradients are thus
computed in forward (as Liger-Kernel does) and backward only scales them by the incoming
gradient. Peak extra memory: one chunk of logits plus grad_weight and grad_hidden.

Where Triton does not run, the same chunked loop runs with a PyTorch step per chunk, so the
memory saving holds on every device.
"""

import torch

from kernels._common import KernelInputError, check_dtype, check_same, mark, needs_grad, tl, triton, use_triton

BLOCK_V = 4096


@triton.jit
def _ce_chunk(LOGITS, TARGET, LOSS, n_cols, ignore_index, scale, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    ptr = LOGITS + row * n_cols
    target = tl.load(TARGET + row)
    valid = target != ignore_index
    safe_target = tl.where(valid, target, 0)
    # Online log-sum-exp (one read of the row).
    m = float("-inf")
    d = 0.0
    for start in range(0, n_cols, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(ptr + offs, mask=offs < n_cols, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(d)
    x_target = tl.load(ptr + safe_target).to(tl.float32)
    tl.store(LOSS + row, tl.where(valid, lse - x_target, 0.0))
    row_scale = tl.where(valid, scale, 0.0)
    # The logits become d(loss)/d(logits): (softmax − one-hot) · scale, zero for ignored rows.
    for start in range(0, n_cols, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < n_cols
        x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
        grad = tl.exp(x - lse)
        grad = tl.where(offs == safe_target, grad - 1.0, grad) * row_scale
        tl.store(ptr + offs, grad.to(LOGITS.dtype.element_ty), mask=mask)


def _chunk_triton(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, scale: float) -> torch.Tensor:
    rows, vocab = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    block = min(BLOCK_V, triton.next_power_of_2(vocab))
    _ce_chunk[(rows,)](logits, target, loss, vocab, ignore_index, scale, BLOCK=block, num_warps=8)
    return loss


def _chunk_torch(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, scale: float) -> torch.Tensor:
    """The PyTorch step of the same loop: losses per row, logits overwritten by their gradient."""
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    logits32 = logits.float()
    lse = torch.logsumexp(logits32, dim=-1)
    loss = (lse - logits32.gather(1, safe[:, None])[:, 0]) * valid
    grad = torch.exp(logits32 - lse[:, None])
    grad[torch.arange(len(safe), device=grad.device), safe] -= 1.0
    grad *= (valid * scale)[:, None]
    logits.copy_(grad)
    return loss


MIN_CHUNK = 1024


def default_chunk_size(tokens: int, hidden: int, vocab: int) -> int:
    """Rows per chunk: a chunk of logits about as large as the hidden states (tokens × hidden,
    Liger-Kernel's rule), but at least MIN_CHUNK rows: every chunk reads the whole weight, and
    chunks of 128 rows made the matmuls memory-bound (measured on an H100: 1.5x slower than
    unfused at 4096 tokens, h 4096, a 128k vocabulary). Rounded to a power of two."""
    growth = max(1, -(-vocab // hidden))
    return triton.next_power_of_2(max(min(tokens, MIN_CHUNK), -(-tokens // growth)))


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, ignore_index, n_valid, chunk_size, want_grad, use_kernel):
        tokens = hidden.shape[0]
        step = _chunk_triton if use_kernel else _chunk_torch
        scale = 1.0 / max(n_valid, 1)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        # Accumulated in the weight's dtype, as Liger-Kernel does: each chunk's matmul sums in
        # float32 inside cuBLAS, and a float32 copy of a 128k × 4096 gradient would cost 2 GiB
        # plus a conversion per chunk (measured 8x slower on an H100).
        grad_weight = torch.zeros_like(weight) if want_grad else None
        for start in range(0, tokens, chunk_size):
            h = hidden[start : start + chunk_size]
            logits = h @ weight.t()
            total += step(logits, target[start : start + chunk_size], ignore_index, scale).sum()
            if want_grad:
                torch.mm(logits, weight, out=grad_hidden[start : start + chunk_size])
                grad_weight.addmm_(logits.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total * scale

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is None:
            raise RuntimeError("fused_linear_cross_entropy: backward through a call made without gradients")
        if grad_loss.item() != 1.0:
            grad_hidden, grad_weight = grad_hidden * grad_loss, grad_weight * grad_loss
        return grad_hidden, grad_weight, None, None, None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `target`, without the full logits.

    hidden: (..., dim); weight: (vocab, dim), the same dtype (float32, bfloat16, float16);
    target: integer class ids of hidden's leading shape, `ignore_index` for positions without a
    target. The mean runs over the other positions; when every target is ignored the loss is 0
    and so are the gradients. chunk_size: rows per chunk (None: `default_chunk_size`).
    Non-contiguous inputs are made contiguous. Gradients for hidden and weight. Under autocast,
    hidden and weight are cast to the autocast dtype first (gradients flow back to the originals).
    """
    op = "fused_linear_cross_entropy"
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type) and hidden.is_floating_point() and weight.is_floating_point():
        # Under autocast the projection runs in the autocast dtype, as a Linear's would; inside,
        # autocast is off so that the chunk matmuls write into their preallocated outputs as is.
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return fused_linear_cross_entropy(hidden.to(dtype), weight.to(dtype), target, ignore_index, chunk_size)
    check_dtype(op, "hidden", hidden)
    check_same(op, hidden=hidden, weight=weight)
    if weight.dim() != 2 or hidden.dim() < 1 or weight.shape[1] != hidden.shape[-1]:
        raise KernelInputError(
            f"{op}: weight {tuple(weight.shape)} must be (vocab, dim) with dim = hidden's last dimension "
            f"({tuple(hidden.shape)})"
        )
    if target.shape != hidden.shape[:-1]:
        raise KernelInputError(f"{op}: target {tuple(target.shape)} must have hidden's leading shape "
                               f"{tuple(hidden.shape[:-1])}")  # fmt: skip
    if target.dtype not in (torch.int64, torch.int32) or target.device != hidden.device:
        raise KernelInputError(f"{op}: target must be int64 or int32 on {hidden.device}, not {target.dtype} on "
                               f"{target.device}")  # fmt: skip
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise KernelInputError(f"{op}: chunk_size must be a positive number of rows or None, not {chunk_size!r}")
    hidden2 = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    target2 = target.reshape(-1).to(torch.int64).contiguous()
    tokens, dim = hidden2.shape
    if tokens == 0:
        raise KernelInputError(f"{op}: hidden has no rows")
    valid = target2 != ignore_index
    out_of_range = valid & ((target2 < 0) | (target2 >= weight.shape[0]))
    n_valid, n_bad = torch.stack((valid.sum(), out_of_range.sum())).tolist()  # one wait for the device
    if n_bad:
        raise KernelInputError(f"{op}: targets must lie in [0, {weight.shape[0]}) or equal ignore_index={ignore_index}")
    chunk = chunk_size or default_chunk_size(tokens, dim, weight.shape[0])
    kernel = use_triton(hidden2, weight)
    mark(op, "triton" if kernel else "torch")
    want_grad = needs_grad(hidden, weight)
    return _FusedLinearCrossEntropy.apply(
        hidden2, weight.contiguous(), target2, ignore_index, n_valid, chunk, want_grad, kernel
    )
