"""all_reduce: S = count × size, busbw = algbw × 2(n−1)/n. torch reduces in place; the
out-of-place case refreshes its output from a separate input before each call (untimed)."""

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


class AllReduce(CollectiveBench):
    name = "all_reduce"
    description = "all_reduce over all ranks: algbw and busbw per message size, every result checked"
    reduces = True
    keys = (*CollectiveBench.keys, "redop")

    def build_op(self, case: OpCase) -> Buffers:
        comm = case.comm
        inp = pattern(case.count, comm.rank, case.dtype, case.device)
        out = inp if case.in_place else torch.empty_like(inp)
        expected = reduced(case.redop, comm.size)
        atol = avg_tolerance(case.dtype) if case.redop == "avg" else 0.0
        op = torch_op(case.redop)

        def run() -> None:
            dist.all_reduce(out, op=op, group=comm.group)

        verify = lambda: count_wrong(out, expected, atol=atol)  # noqa: E731
        if case.in_place:
            pristine = inp.clone()
            return Buffers(run, verify, out, reset=lambda: out.copy_(pristine))
        return Buffers(run, verify, out, prepare=lambda: out.copy_(inp))


BENCHMARK = AllReduce()
