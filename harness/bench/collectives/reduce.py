"""reduce: S = count × size, busbw = algbw; the result is checked on the root only (other
ranks' buffers are scratch). Out of place refreshes the buffer before each call (untimed)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import Buffers, CollectiveBench, OpCase, Reduction, count_wrong, pattern


class Reduce(CollectiveBench):
    name = "reduce"
    description = "reduce to bench.root"
    reduces = True
    rooted = True
    keys = (*CollectiveBench.keys, "redop", "root")

    def build_op(self, case: OpCase) -> Buffers:
        comm = case.comm
        inp = pattern(case.count, comm.rank, case.dtype, case.device)
        out = inp if case.in_place else torch.empty_like(inp)
        red = Reduction.of(case.redop, comm.size, case.dtype)
        dst = comm.ranks[case.root]

        def run() -> None:
            dist.reduce(out, dst=dst, op=red.op, group=comm.group)

        def verify() -> int:
            return count_wrong(out, red.expected, atol=red.atol) if comm.rank == case.root else 0

        return Buffers.in_place_or_not(run, verify, out, inp, case.in_place)


BENCHMARK = Reduce()
