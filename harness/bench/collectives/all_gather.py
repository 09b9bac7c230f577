"""all_gather: S = the full output (sendcount × n × size), busbw = algbw × (n−1)/n.
In place, each rank's input is its own slice of the output, as in NCCL."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import Buffers, CollectiveBench, OpCase, count_wrong, ident_pattern

# torch 2.13 renamed all_gather_into_tensor; clusters run older releases too.
ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class AllGather(CollectiveBench):
    name = "all_gather"
    description = "all_gather: every rank receives every rank's slice"

    def count_multiple(self, group_size: int) -> int:
        return group_size

    def build_op(self, case: OpCase) -> Buffers:
        comm, n = case.comm, case.comm.size
        chunk = case.count // n
        out = torch.full((case.count,), 7, dtype=case.dtype, device=case.device)
        mine = ident_pattern(chunk, comm.rank, case.dtype, case.device)
        inp = out[comm.rank * chunk : (comm.rank + 1) * chunk] if case.in_place else mine

        def run() -> None:
            ALL_GATHER(out, inp, group=comm.group)

        def verify() -> int:
            return sum(
                count_wrong(out[q * chunk : (q + 1) * chunk], ident_pattern(chunk, q, case.dtype, case.device))
                for q in range(n)
            )

        reset = (lambda: inp.copy_(mine)) if case.in_place else None
        return Buffers(run, verify, out, reset=reset)


BENCHMARK = AllGather()
