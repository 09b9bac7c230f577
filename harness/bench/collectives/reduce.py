"""reduce: S = count × size, busbw = algbw; the result is checked on the root only (other
ranks' buffers are scratch). Out of place refreshes the buffer before each call (untimed)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import (
    Buffers,
    CollectiveBench,
    OpCase,
    avg_tolerance,
    count_wrong,
    pattern,
    reduced,
    torch_op,
)


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
        pristine = inp.clone()
        expected = reduced(case.redop, comm.size)
        atol = avg_tolerance(case.dtype) if case.redop == "avg" else 0.0
        op, dst = torch_op(case.redop), comm.ranks[case.root]

        def run() -> None:
            dist.reduce(out, dst=dst, op=op, group=comm.group)

        def verify() -> int:
            return count_wrong(out, expected, atol=atol) if comm.rank == case.root else 0

        if case.in_place:
            return Buffers(run, verify, out, reset=lambda: out.copy_(pristine))
        return Buffers(run, verify, out, prepare=lambda: out.copy_(inp))


BENCHMARK = Reduce()
