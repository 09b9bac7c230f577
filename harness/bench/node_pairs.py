"""node_pairs: every rank exchanges a buffer with its counterpart on a partner node (same local
rank), both directions at once, in rounds of disjoint node pairs: (0,1), (2,3), ... then
(1,2), (3,4), ... (n−1, 0), and for an odd n a third round (n−1, 0), so that every node meets
two different partners. A node with a bad link is slow in both of its rounds while its
neighbours are slow in only one, so a node's best round localises the fault to the node
rather than to a ring. (With two nodes there is one pair: a slow link shows, but not which
end.) GB/s = bytes / t per direction (busbw of send/recv, factor 1). Ranks whose node has no
partner in a round idle through it and report no figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from harness import units
from harness.bench.base import Benchmark, BenchSpec, CaseSpec, GateFigure, GateValue, PlanEnv, Runnable, Where
from harness.bench.collectives.base import DTYPE_CHOICES, count_wrong, ident_pattern, message_sizes
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.dtypes import itemsize, torch_dtype
from harness.results.kinds import Metric

PAIR_BUSBW = GateFigure(
    "node_pair_busbw_gbps", "GB/s", "node", title="node-pair exchange: bus bandwidth of each node (its best round)"
)


@dataclass(frozen=True)
class PairCase(CaseSpec):
    round: int
    bytes: int
    count: int


def rounds(nodes: int) -> tuple[int, ...]:
    """The rounds a job of `nodes` nodes runs."""
    if nodes == 2:
        return (0,)  # both rounds would be the same pair
    return (0, 1, 2) if nodes % 2 else (0, 1)


def partner(node: int, nodes: int, round_: int) -> int | None:
    """The node paired with `node` in round 0 ((0,1), (2,3), ...), round 1 ((1,2), ..., (n−1,0))
    or, for odd n, round 2 ((n−1, 0): the two ends, each idle in one of the first rounds)."""
    if nodes < 2:
        return None
    if round_ == 2:
        return {0: nodes - 1, nodes - 1: 0}.get(node) if nodes % 2 else None
    first = node - round_  # position counted from the round's first node
    mate = node + 1 if first % 2 == 0 else node - 1
    if round_ == 1 and nodes % 2 == 0:
        mate %= nodes  # an even ring closes: (n−1, 0)
    return mate if 0 <= mate < nodes and mate != node else None


class NodePairs(Benchmark):
    name = "node_pairs"
    description = "node-pair exchange: counterpart ranks of paired nodes send and receive at once, two rounds"
    collective = False
    keys = ("dtype", "min_bytes", "max_bytes", "step_factor", "warmup", "iters")
    columns = (
        Column("rank", "rank"),
        Column("host", "host"),
        Column("round", "round"),
        Column("node", "node"),
        Column("partner_node", "partner"),
        Column("bytes", "size (B)", "{:,}"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("busbw_gbps", "busbw (GB/s)", "{:.3f}"),
        Column("wrong", "#wrong"),
    )
    identity = ("round", "dtype", "bytes", "rank")
    metrics = (Metric("busbw_gbps", "GB/s"), Metric("time_us", "us", higher_is_better=False))
    gates = (PAIR_BUSBW,)

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return DTYPE_CHOICES

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float32",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[PairCase]:
        if env.nodes is not None and env.nodes < 2:
            env.note("node_pairs: needs at least 2 nodes; skipped")
            return []
        env.require(2 * spec.max_bytes, f"bench.max_bytes={units.format_bytes(spec.max_bytes)}: node_pairs")
        cases = []
        for dtype in dtypes:
            size = itemsize(dtype)
            for requested in message_sizes(spec.min_bytes, spec.max_bytes, spec.step_factor):
                count = requested // size
                if count:
                    for round_ in rounds(env.nodes or 2):
                        cases.append(PairCase(dtype, round_, count * size, count))
        return cases

    def build(self, case: PairCase, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        per_node = max(1, ctx.launch.local_world_size)
        nodes = ctx.world_size // per_node
        node = ctx.rank // per_node
        mate = partner(node, nodes, case.round)
        dtype = torch_dtype(case.dtype)
        send = ident_pattern(case.count, ctx.rank, dtype, ctx.device)
        recv = torch.full_like(send, 7)
        # Where this rank sat in the round (its node, its partner node, its peer rank): row fields.
        placed = {"node": node, "partner_node": mate, "peer_rank": None}
        if mate is None:  # no partner this round: take part in nothing
            return Runnable(lambda: None, lambda: {"wrong": 0, "passed": True, **placed}, recv)
        peer = mate * per_node + ctx.rank % per_node
        placed["peer_rank"] = peer
        expected = ident_pattern(case.count, peer, dtype, ctx.device)

        def run() -> None:
            ops = [tdist.P2POp(tdist.isend, send, peer), tdist.P2POp(tdist.irecv, recv, peer)]
            for work in tdist.batch_isend_irecv(ops):
                work.wait()

        def verify() -> dict[str, Any]:
            wrong = count_wrong(recv, expected)
            return {"wrong": wrong, "passed": wrong == 0, **placed}

        return Runnable(run, verify, recv)

    def figures(self, case: PairCase, seconds: float, where: Where) -> dict[str, Any]:
        return {"busbw_gbps": units.algbw_gbps(case.bytes, seconds)}

    def derive(self, row: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
        """A rank without a partner in its round measured nothing: no figure."""
        return {"busbw_gbps": None} if row.get("partner_node") is None else {}

    def gate_values(self, rows: list[dict], scope: str) -> list[GateValue]:
        """Per node: its slowest rank in each round, then its best round (a bad neighbour costs one
        round; a bad node is slow in all of its rounds)."""
        pairs = [r for r in rows if r.get("busbw_gbps") is not None]
        if not pairs:
            return []
        largest = max(r["bytes"] for r in pairs)
        per_round: dict[tuple[str, int], float] = {}
        for r in pairs:
            if r["bytes"] == largest:
                key = (r["host"], r["round"])
                per_round[key] = min(per_round.get(key, float("inf")), r["busbw_gbps"])
        per_node: dict[str, float] = {}
        for (host, _), value in per_round.items():
            per_node[host] = max(per_node.get(host, 0.0), value)
        return [GateValue(PAIR_BUSBW, PAIR_BUSBW.name, value, host=host) for host, value in sorted(per_node.items())]


BENCHMARK = NodePairs()
