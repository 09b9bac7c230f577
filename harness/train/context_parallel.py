"""Context parallelism as Llama 3 trained it ("The Llama 3 Herd of Models", §3.3.2): the sequence
is cut into 2·cp chunks and rank r of the CP group holds chunks r and 2·cp−1−r, one early and
one late, so that every rank does the same share of causal attention. Each rank projects its
own tokens; attention all-gathers K and V over the group and computes the rank's queries
against every key, with the causal mask and the rotary angles on global positions.

Plain collectives (an autograd-aware all-gather whose backward is a reduce-scatter), so it runs
on gloo and CPU, where torch's own `context_parallel` has no sharding strategy for the CPU
flash-attention op (shared/REFERENCE.md §10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F


def chunk_positions(local_len: int, rank: int, size: int) -> torch.Tensor:
    """Global positions of the `local_len` tokens rank `rank` of `size` holds: chunk `rank`,
    then chunk 2·size−1−rank, each local_len / 2 long."""
    if local_len % 2:
        raise ValueError(f"a context-parallel rank holds two equal chunks; {local_len} tokens do not split")
    chunk = local_len // 2
    early, late = rank * chunk, (2 * size - 1 - rank) * chunk
    return torch.cat([torch.arange(early, early + chunk), torch.arange(late, late + chunk)])


def shard_sequence(tensor: torch.Tensor, rank: int, size: int, dim: int = 1) -> torch.Tensor:
    """This rank's two chunks of a whole sequence (batch, seq, ...) along `dim`."""
    if size == 1:
        return tensor
    seq = tensor.shape[dim]
    positions = chunk_positions(seq // size, rank, size).to(tensor.device)
    return tensor.index_select(dim, positions)


def unshard_order(size: int) -> list[tuple[int, int]]:
    """For each of the 2·size chunks in sequence order: (rank that holds it, which half of that
    rank's tokens: 0 early, 1 late)."""
    return [(i, 0) if i < size else (2 * size - 1 - i, 1) for i in range(2 * size)]


@dataclass
class ContextParallel:
    """One rank's place in its CP group, and the attention that spans the group."""

    group: Any
    """The CP process group (torch ProcessGroup)."""
    rank: int
    size: int

    def positions(self, local_len: int, device: torch.device) -> torch.Tensor:
        """Global positions of this rank's tokens (for RoPE and the mask)."""
        return chunk_positions(local_len, self.rank, self.size).to(device)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, local_len, ...) from every rank -> (batch, seq, ...) in sequence order. The
        backward reduce-scatters: each rank's K and V get the gradients of every rank's queries."""
        b, s = x.shape[:2]
        full = funcol.all_gather_single_autograd(x.contiguous(), 0, self.group)
        full = funcol.wait_tensor(full).view(self.size, b, 2, s // 2, *x.shape[2:])
        chunks = [full[holder, :, half] for holder, half in unshard_order(self.size)]
        return torch.cat(chunks, dim=1)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention of this rank's queries (batch, local_len, heads, head_dim) against the
        keys and values of the whole sequence; returns (batch, local_len, heads, head_dim)."""
        k, v = self.gather(k), self.gather(v)
        if k.shape[2] != q.shape[2]:  # grouped-query attention: share each KV head
            repeat = q.shape[2] // k.shape[2]
            k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
        q_pos = self.positions(q.shape[1], q.device)
        k_pos = torch.arange(k.shape[1], device=q.device)
        mask = k_pos[None, :] <= q_pos[:, None]  # causal on global positions
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return out.transpose(1, 2)
