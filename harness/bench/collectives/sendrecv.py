"""sendrecv: each rank sends to rank+1 and receives from rank−1 (a ring), S = count × size,
busbw = algbw. Out of place only (two buffers)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.bench.collectives.base import Buffers, CollectiveBench, OpCase, count_wrong, ident_pattern


class SendRecv(CollectiveBench):
    name = "sendrecv"
    description = "sendrecv ring: rank r sends to r+1 and receives from r-1 at the same time"
    modes = (False,)
    min_ranks = 2

    def build_op(self, case: OpCase) -> Buffers:
        comm = case.comm
        n, r = comm.size, comm.rank
        send = ident_pattern(case.count, r, case.dtype, case.device)
        recv = torch.full_like(send, 7)
        nxt, prev = comm.ranks[(r + 1) % n], comm.ranks[(r - 1) % n]
        expected = ident_pattern(case.count, (r - 1) % n, case.dtype, case.device)

        def run() -> None:
            ops = [dist.P2POp(dist.isend, send, nxt, comm.group), dist.P2POp(dist.irecv, recv, prev, comm.group)]
            for work in dist.batch_isend_irecv(ops):
                work.wait()

        return Buffers(run, lambda: count_wrong(recv, expected), recv)


BENCHMARK = SendRecv()
