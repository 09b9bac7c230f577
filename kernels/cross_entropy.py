"""Fused linear cross-entropy: loss = mean over non-ignored targets of CE(hidden @ weightᵀ),
computed in chunks of rows so the (tokens × vocab) logits never exist at once.

For each chunk the logits are formed in the input dtype, a kernel computes every row's
log-sum-exp online (one pass), writes the row's loss and then overwrites the logits in place
with their gradient (softmax − one-hot) / n_valid; two matmuls turn that into the chunk's
grad_hidden and its share of grad_weight (accumulated in the weight's dtype). The gradients are thus
computed in forward (as Liger-Kernel does) and backward only scales them by the incoming
gradient. Peak extra memory: one chunk of logits plus grad_weight and grad_hidden.

Where Triton does not run, the same chunked loop runs with a PyTorch step per chunk, so the
memory saving holds on every device. Both paths run inside the custom ops
`exaharness::fused_linear_cross_entropy_fwd` / `_bwd`, which `torch.compile` keeps whole in its
graph (the loop's host syncs happen inside the op, not in the traced code).
"""

import torch

from kernels._common import (
    KernelInputError,
    check_dtype,
    check_same,
    mark,
    needs_grad,
    tl,
    triton,
    use_triton,
)

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


def _count_valid(target: torch.Tensor, ignore_index: int, vocab: int) -> int:
    """Targets that are not ignored; KernelInputError when one lies outside [0, vocab). One wait
    for the device: the count scales the loss and the gradients inside the chunk loop."""
    valid = target != ignore_index
    out_of_range = valid & ((target < 0) | (target >= vocab))
    n_valid, n_bad = torch.stack((valid.sum(), out_of_range.sum())).tolist()
    if n_bad:
        raise KernelInputError(
            f"fused_linear_cross_entropy: targets must lie in [0, {vocab}) or equal ignore_index={ignore_index}"
        )
    return n_valid


# Both ops wait for the device (the count of valid targets; the incoming gradient's value), which
# a CUDA graph cannot capture: the tag is what inductor's graph partition reads to keep an op out
# of its CUDA graphs (mode="reduce-overhead"; not tried without a GPU). Older torch has no tag.
_HOST_SYNC = {"tags": (torch.Tag.cudagraph_unsafe,)} if hasattr(torch.Tag, "cudagraph_unsafe") else {}


@torch.library.custom_op("exaharness::fused_linear_cross_entropy_fwd", mutates_args=(), **_HOST_SYNC)
def fused_linear_cross_entropy_fwd(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    chunk_size: int | None,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chunked loop as a torch op, on hidden (tokens, dim), weight (vocab, dim) and int64
    target (tokens,): the mean loss (float32 scalar) and, when want_grad, the gradients of that
    loss for hidden and weight (empty tensors otherwise). The Triton step runs where `use_triton`
    says so, the PyTorch step elsewhere. Checks the target range (KernelInputError)."""
    hidden, weight, target = hidden.contiguous(), weight.contiguous(), target.contiguous()
    tokens, dim = hidden.shape
    n_valid = _count_valid(target, ignore_index, weight.shape[0])
    chunk = chunk_size or default_chunk_size(tokens, dim, weight.shape[0])
    kernel = use_triton(hidden, weight)
    mark("fused_linear_cross_entropy", "triton" if kernel else "torch")
    step = _chunk_triton if kernel else _chunk_torch
    scale = 1.0 / max(n_valid, 1)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if want_grad else hidden.new_empty(0)
    # Accumulated in the weight's dtype, as Liger-Kernel does: each chunk's matmul sums in
    # float32 inside cuBLAS, and a float32 copy of a 128k × 4096 gradient would cost 2 GiB
    # plus a conversion per chunk (measured 8x slower on an H100).
    grad_weight = torch.zeros_like(weight) if want_grad else weight.new_empty(0)
    for start in range(0, tokens, chunk):
        h = hidden[start : start + chunk]
        logits = h @ weight.t()
        total += step(logits, target[start : start + chunk], ignore_index, scale).sum()
        if want_grad:
            torch.mm(logits, weight, out=grad_hidden[start : start + chunk])
            grad_weight.addmm_(logits.t(), h)
    return total * scale, grad_hidden, grad_weight


@fused_linear_cross_entropy_fwd.register_fake
def _(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    chunk_size: int | None,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss = hidden.new_empty((), dtype=torch.float32)
    if not want_grad:
        return loss, hidden.new_empty(0), weight.new_empty(0)
    return loss, hidden.new_empty(hidden.shape), weight.new_empty(weight.shape)


@torch.library.custom_op(
    "exaharness::fused_linear_cross_entropy_bwd", mutates_args=("grad_hidden", "grad_weight"), **_HOST_SYNC
)
def fused_linear_cross_entropy_bwd(
    grad_loss: torch.Tensor, grad_hidden: torch.Tensor, grad_weight: torch.Tensor
) -> None:
    """Scales the gradients the forward computed by the loss's incoming gradient, in place: a new
    tensor would add a second vocab × dim grad_weight to the peak memory. Nothing to do for the
    usual 1.0. In place, so a second backward through the same forward (retain_graph=True)
    raises autograd's "modified by an inplace operation" error instead of scaling twice."""
    if grad_loss.item() != 1.0:
        grad_hidden.mul_(grad_loss)
        grad_weight.mul_(grad_loss)


@fused_linear_cross_entropy_bwd.register_fake
def _(grad_loss: torch.Tensor, grad_hidden: torch.Tensor, grad_weight: torch.Tensor) -> None:
    return None


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    ctx.want_grad = inputs[5]
    _loss, grad_hidden, grad_weight = output
    ctx.save_for_backward(grad_hidden, grad_weight)
    ctx.mark_non_differentiable(grad_hidden, grad_weight)


def _backward(ctx, grad_loss: torch.Tensor, _dgh, _dgw) -> tuple:
    if not ctx.want_grad:
        raise RuntimeError("fused_linear_cross_entropy: backward through a call made without gradients")
    grad_hidden, grad_weight = ctx.saved_tensors
    fused_linear_cross_entropy_bwd(grad_loss, grad_hidden, grad_weight)
    return grad_hidden, grad_weight, None, None, None, None


fused_linear_cross_entropy_fwd.register_autograd(_backward, setup_context=_setup_context)


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

    Calls the custom op `exaharness::fused_linear_cross_entropy_fwd` (backward
    `exaharness::fused_linear_cross_entropy_bwd`) on every path. Shapes, dtypes, devices and
    chunk_size are checked here (under `torch.compile`, while dynamo traces); the target range
    needs the device's values, so the op checks it when it runs, eager or compiled.
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
    if hidden2.shape[0] == 0:
        raise KernelInputError(f"{op}: hidden has no rows")
    loss, _grad_hidden, _grad_weight = fused_linear_cross_entropy_fwd(
        hidden2, weight.contiguous(), target2, ignore_index, chunk_size, needs_grad(hidden, weight)
    )
    return loss
