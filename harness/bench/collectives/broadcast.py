"""broadcast: S = count × size, busbw = algbw. torch broadcasts in place; out of place, the
output is refreshed from the input before each call (untimed). Non-roots start from garbage."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import Buffers, CollectiveBench, OpCase, count_wrong, ident_pattern


class Broadcast(CollectiveBench):
    name = "broadcast"
    description = "broadcast from bench.root to every rank"
    rooted = True
    keys = (*CollectiveBench.keys, "root")

    def build_op(self, case: OpCase) -> Buffers:
        comm = case.comm
        expected = ident_pattern(case.count, case.root, case.dtype, case.device)
        inp = expected.clone() if comm.rank == case.root else torch.full_like(expected, 7)
        out = inp if case.in_place else torch.empty_like(inp)
        src = comm.ranks[case.root]

        def run() -> None:
            dist.broadcast(out, src=src, group=comm.group)

        def verify() -> int:
            return count_wrong(out, expected)

        return Buffers.in_place_or_not(run, verify, out, inp, case.in_place)


BENCHMARK = Broadcast()
