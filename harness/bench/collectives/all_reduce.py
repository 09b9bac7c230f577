"""all_reduce: S = count × size, busbw = algbw × 2(n−1)/n. torch reduces in place; the
out-of-place case refreshes its output from a separate input before each call (untimed)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import Buffers, CollectiveBench, OpCase, Reduction, count_wrong, pattern


class AllReduce(CollectiveBench):
    name = "all_reduce"
    description = "all_reduce over all ranks: algbw and busbw per message size, every result checked"
    reduces = True
    keys = (*CollectiveBench.keys, "redop")

    def build_op(self, case: OpCase) -> Buffers:
        comm = case.comm
        inp = pattern(case.count, comm.rank, case.dtype, case.device)
        out = inp if case.in_place else torch.empty_like(inp)
        red = Reduction.of(case.redop, comm.size, case.dtype)

        def run() -> None:
            dist.all_reduce(out, op=red.op, group=comm.group)

        def verify() -> int:
            return count_wrong(out, red.expected, atol=red.atol)

        return Buffers.in_place_or_not(run, verify, out, inp, case.in_place)


BENCHMARK = AllReduce()
