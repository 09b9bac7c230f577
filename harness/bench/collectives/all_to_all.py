"""all_to_all: S = count × size per rank (n slices of count/n), busbw = algbw × (n−1)/n.
Slice p of rank r's input holds ((131r + 17p + 7j) mod 251) − 125 (exact in bf16), so every slice
says where it came from and where it was going; torch's all_to_all_single is out of place only."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import Buffers, CollectiveBench, OpCase, count_wrong


def slices(count: int, n: int, value: callable, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Element t = slice t // (count/n), offset t % (count/n), valued by value(slice, offset)."""
    t = torch.arange(count, device=device)
    chunk = count // n
    return value(t // chunk, t % chunk).to(dtype)


class AllToAll(CollectiveBench):
    name = "all_to_all"
    description = "all_to_all: every rank sends a distinct slice to every rank"
    modes = (False,)

    def count_multiple(self, group_size: int) -> int:
        return group_size

    def build_op(self, case: OpCase) -> Buffers:
        comm, r = case.comm, case.comm.rank
        inp = slices(
            case.count, comm.size, lambda p, j: (131 * r + 17 * p + 7 * j) % 251 - 125, case.dtype, case.device
        )
        expected = slices(case.count, comm.size, lambda q, j: (131 * q + 17 * r + 7 * j) % 251 - 125, case.dtype,
                          case.device)  # fmt: skip
        out = torch.empty_like(inp)

        def run() -> None:
            dist.all_to_all_single(out, inp, group=comm.group)

        return Buffers(run, lambda: count_wrong(out, expected), out)


BENCHMARK = AllToAll()
