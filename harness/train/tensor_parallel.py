"""The parts of the model's forward that see tensor parallelism (DTensor) themselves: the fused
row-wise ops, and the output head with its loss. Everything else is laid out by the DTensor
plan of `harness.train.parallelize`.

- Fused RMSNorm under sequence parallelism: the norm is row-wise, so the kernel runs on this
  rank's rows (a plain tensor) with the replicated weight; the weight's gradient is a partial
  sum over the ranks' rows, which DTensor then reduces.
- The output head with a vocabulary-sharded weight:
  - unfused: the logits stay sharded over the vocabulary and the loss is computed by torch's
    loss parallel (the trainer runs forward and backward under `loss_parallel()`);
  - fused (`model.fused_kernels=true`): the fused linear cross-entropy has no vocabulary-parallel
    version here, so it **gathers its inputs**: the output weight is all-gathered over TP (its
    gradient is reduce-scattered back), and each TP rank computes the fused loss for its own
    1/tp of the tokens (its sequence shard under SP; a slice of the replicated hidden states
    without). No rank materialises logits or repeats another's work; the cost is a transient
    vocab × dim weight per micro-batch and its all-gather.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor

import kernels

FUSED_CROSS_ENTROPY_TP = "output weight all-gathered over TP; each TP rank's fused loss over its 1/tp of the tokens"
"""How the fused cross-entropy runs under tensor parallelism (recorded in the manifest)."""


def is_sharded(weight: torch.Tensor) -> bool:
    """Whether tensor parallelism distributed this parameter (a DTensor)."""
    return isinstance(weight, DTensor)


def copy_global(param: torch.Tensor, values: torch.Tensor) -> None:
    """Set a parameter from the values of the whole tensor: a distributed one keeps its own
    slice (every rank computed the same whole values, so nothing is sent)."""
    if isinstance(param, DTensor):
        values = distribute_tensor(values, param.device_mesh, param.placements, src_data_rank=None).to_local()
        param = param.to_local()
    param.copy_(values.to(param.dtype))


def local_rowwise(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                  weight: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """op(x, weight) for an op that works row by row (RMSNorm), run on this rank's rows when x is
    a DTensor; the result has x's layout."""
    if not isinstance(x, DTensor):
        return op(x, weight.to_local() if isinstance(weight, DTensor) else weight)
    sharded = any(p.is_shard() for p in x.placements)
    # Rows split over ranks: each rank's weight gradient is a partial sum of the whole one.
    grad = [Partial()] if sharded else None
    w = weight.to_local(grad_placements=grad) if isinstance(weight, DTensor) else weight
    out = op(x.to_local(), w)
    return DTensor.from_local(out, x.device_mesh, x.placements, shape=x.shape, stride=x.stride())


def head_loss(x: torch.Tensor, weight: DTensor, targets: torch.Tensor | None, *, fused: bool) -> torch.Tensor:
    """The output projection with a vocabulary-sharded weight (vocab/tp, dim), and with targets
    the mean cross-entropy over all the tokens of x, the same value on every TP rank."""
    mesh = weight.device_mesh
    if not isinstance(x, DTensor):  # replicated hidden states (no sequence parallelism)
        x = DTensor.from_local(x, mesh, [Replicate()])
    if targets is None:
        return F.linear(x.redistribute(placements=[Replicate()]), weight).full_tensor()
    if fused:
        return _fused_loss(x, weight, targets)
    logits = F.linear(x.redistribute(placements=[Replicate()]), weight)  # sharded over the vocabulary
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1))  # under loss_parallel()
    # to_local() is a view; a fresh scalar keeps FSDP from warning about in-place ops on it
    return loss.to_local().clone() if isinstance(loss, DTensor) else loss


def _fused_loss(x: DTensor, weight: DTensor, targets: torch.Tensor) -> torch.Tensor:
    mesh = weight.device_mesh
    rank, size = mesh.get_local_rank(), mesh.size()
    full_weight = weight.redistribute(placements=[Replicate()]).to_local(grad_placements=[Partial()])
    if any(p.is_shard() for p in x.placements):  # sequence parallel: this rank's rows already
        hidden = x.to_local()
    else:  # replicated: take this rank's slice; the gradient of x sums over the slices
        hidden = x.to_local(grad_placements=[Partial()]).chunk(size, dim=1)[rank]
    local_targets = targets.chunk(size, dim=1)[rank]
    if local_targets.shape != hidden.shape[:-1]:
        raise ValueError(f"tokens {tuple(hidden.shape[:-1])} and targets {tuple(local_targets.shape)} do not match")
    share = kernels.fused_linear_cross_entropy(hidden, full_weight.to(hidden.dtype), local_targets) / size
    total = share.detach().clone()
    dist.all_reduce(total, group=mesh.get_group())
    # The value is the mean over every rank's tokens; the gradient flows through this rank's share.
    return share + (total - share.detach())
