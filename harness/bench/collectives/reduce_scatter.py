"""reduce_scatter: S = the full input (recvcount × n × size), busbw = algbw × (n−1)/n.
Rank r's input is pattern() over the global index; its output is the reduction of slice r.
In place, the output is the rank's own slice of the input, as in NCCL."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import Buffers, CollectiveBench, OpCase, Reduction, count_wrong, pattern

# torch 2.13 renamed reduce_scatter_tensor; clusters run older releases too.
REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class ReduceScatter(CollectiveBench):
    name = "reduce_scatter"
    description = "reduce_scatter: the reduction of slice r lands on rank r"
    reduces = True
    keys = (*CollectiveBench.keys, "redop")

    def count_multiple(self, group_size: int) -> int:
        return group_size

    def build_op(self, case: OpCase) -> Buffers:
        comm = case.comm
        chunk = case.count // comm.size
        inp = pattern(case.count, comm.rank, case.dtype, case.device)
        pristine = inp.clone()
        start = comm.rank * chunk
        out = inp[start : start + chunk] if case.in_place else torch.empty(chunk, dtype=case.dtype, device=case.device)
        red = Reduction.of(case.redop, comm.size, case.dtype)

        def run() -> None:
            REDUCE_SCATTER(out, inp, op=red.op, group=comm.group)

        def verify() -> int:
            return count_wrong(out, red.expected, offset=start, atol=red.atol)

        return Buffers(run, verify, out, reset=lambda: inp.copy_(pristine))


BENCHMARK = ReduceScatter()
