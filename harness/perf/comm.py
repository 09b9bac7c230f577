"""Communication time: an α-β model per collective and algorithm, placed on the cluster's NVLink
domains and network, and the bytes each kind of parallelism moves.

α-β (shared/REFERENCE.md §10; NCCL's own tuning model, src/graph/tuning.cc): a ring over n ranks
takes steps(n)·α + bus_factor(n)·S/β, with S the op's bytes as nccl-tests counts them (the full
buffer for all_gather and reduce_scatter):
- all_reduce: 2(n−1)·α + 2(n−1)/n · S/β;
- all_gather, reduce_scatter: (n−1)·α + (n−1)/n · S/β;
- send/recv: α + S/β.
All-reduce may also run as NCCL's double binary tree (2·log₂n steps of α, 2·S/β) or
hierarchically (reduce-scatter inside each NVLink domain, all-reduce across domains on S/g,
all-gather inside); the fastest is taken. A group spread over k domains with g members in each
uses a flat ring whose bandwidth is the smaller of NVLink and g NICs (each GPU has its own NIC,
and NCCL runs one ring channel per NIC). Each collective adds NCCL's base latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.perf.device import AlphaBeta, Device
from harness.units import bus_factor

COLLECTIVE_BASE_S = 8.4e-6
"""NCCL's base latency of a ring collective, Simple protocol (src/graph/tuning.cc baseLat)."""


def ring_steps(op: str, n: int) -> int:
    """Latency steps of a ring: 2(n−1) for all_reduce, n−1 for all_gather/reduce_scatter/all_to_all,
    1 for send/recv, n−1 for broadcast and reduce (a pipelined chain)."""
    if n <= 1:
        return 0
    return {"all_reduce": 2 * (n - 1), "sendrecv": 1}.get(op, n - 1)


def ring_time_s(op: str, nbytes: float, n: int, *, bw_gbps: float, alpha_s: float) -> float:
    """Ring time of one op over n ranks on links of `bw_gbps` (one direction, GB/s) — the α-β
    formula above, without the base latency."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return ring_steps(op, n) * alpha_s + bus_factor(op, n) * nbytes / (bw_gbps * 1e9)


def tree_all_reduce_s(nbytes: float, n: int, *, bw_gbps: float, alpha_s: float) -> float:
    """NCCL's double binary tree all_reduce: 2·⌈log₂ n⌉ steps of α; each rank sends and receives
    the buffer twice (reduce up, broadcast down), at half the ring's algorithm bandwidth."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * math.ceil(math.log2(n)) * alpha_s + 2 * nbytes / (bw_gbps * 1e9)


@dataclass(frozen=True)
class Span:
    """Where a communicator's ranks sit: n ranks, `per_domain` of them in each of `domains`
    NVLink domains."""

    n: int
    per_domain: int
    domains: int


def group_span(size: int, stride: int, domain: int) -> Span:
    """The span of a group of `size` ranks `stride` apart, with NVLink domains of `domain`
    consecutive ranks (the mesh places TP innermost, so a TP group of ≤ domain stays inside)."""
    if size <= 1:
        return Span(1, 1, 1)
    per_domain = 1 if stride >= domain else max(1, min(size, domain // stride))
    return Span(size, per_domain, math.ceil(size / per_domain))


def _fitted(device: Device, op: str, scope: str) -> AlphaBeta | None:
    return device.collectives.get((op, scope)) or device.collectives.get(("*", scope))


def collective_time_s(op: str, nbytes: float, span: Span, device: Device) -> float:
    """Seconds of one collective of `nbytes` (nccl-tests' S) over a group placed as `span`."""
    if span.n <= 1 or nbytes <= 0:
        return 0.0
    scope = "intra" if span.domains == 1 else "inter"
    fitted = _fitted(device, op, scope)
    if fitted is not None:
        return ring_time_s(op, nbytes, span.n, bw_gbps=fitted.beta_gbps, alpha_s=fitted.alpha_s)
    intra_bw = device.nvlink_gbps * device.intra_efficiency
    if span.domains == 1:
        times = [ring_time_s(op, nbytes, span.n, bw_gbps=intra_bw, alpha_s=device.latency_intra_s)]
        if op == "all_reduce":
            times.append(tree_all_reduce_s(nbytes, span.n, bw_gbps=intra_bw, alpha_s=device.latency_intra_s))
        return COLLECTIVE_BASE_S + min(times)
    inter_bw = device.nic_gbps * device.inter_efficiency
    g, k = span.per_domain, span.domains
    flat_bw = min(intra_bw, g * inter_bw)
    inter_steps = ring_steps(op, k)
    flat = (ring_steps(op, span.n) - inter_steps) * device.latency_intra_s + inter_steps * device.latency_inter_s
    flat += bus_factor(op, span.n) * nbytes / (flat_bw * 1e9)
    times = [flat]
    if op in ("all_reduce", "all_gather", "reduce_scatter") and g > 1:
        inner = ring_time_s("reduce_scatter", nbytes, g, bw_gbps=intra_bw, alpha_s=device.latency_intra_s)
        outer = ring_time_s(op, nbytes / g, k, bw_gbps=inter_bw, alpha_s=device.latency_inter_s)
        times.append(outer + (2 * inner if op == "all_reduce" else inner))
    if op == "all_reduce":
        tree = 2 * ((g - 1) * device.latency_intra_s + math.ceil(math.log2(k)) * device.latency_inter_s)
        times.append(tree + 2 * nbytes / (flat_bw * 1e9))
    return COLLECTIVE_BASE_S + min(times)


def p2p_time_s(nbytes: float, *, same_domain: bool, device: Device) -> float:
    """One send/recv between neighbouring pipeline stages."""
    if nbytes <= 0:
        return 0.0
    fitted = _fitted(device, "sendrecv", "intra" if same_domain else "inter")
    if fitted is not None:
        return fitted.alpha_s + nbytes / (fitted.beta_gbps * 1e9)
    if same_domain:
        return device.latency_intra_s + nbytes / (device.nvlink_gbps * device.intra_efficiency * 1e9)
    return device.latency_inter_s + nbytes / (device.nic_gbps * device.inter_efficiency * 1e9)


@dataclass(frozen=True)
class Collective:
    """One collective a layer issues per micro-batch."""

    op: str
    nbytes: float
    """nccl-tests' S: the full buffer for all_gather and reduce_scatter."""
    phase: str
    """forward, backward or recompute."""
    overlappable: bool = False
    """Runs beside an independent GEMM by design (Megatron's backward re-gather of the input)."""


def tp_collectives(
    *, dim: int, tokens: int, tp: int, sequence_parallel: bool, recompute: bool, activation_bytes: int = 2,
) -> tuple[Collective, ...]:  # fmt: skip
    """The TP collectives of one layer per micro-batch (Korthikanti et al. 2022, Megatron-LM).

    The activation buffer is S = tokens × dim × bytes. With sequence parallelism the forward does
    an all-gather before each column-parallel GEMM (QKV, MLP-in) and a reduce-scatter after each
    row-parallel one (attention-out, MLP-out): 2 all_gather + 2 reduce_scatter of S. The backward
    mirrors them (2 + 2) and re-gathers the two saved sequence shards for the weight gradients
    (2 all_gather, overlapped with the input-gradient GEMM). Without SP: 2 all_reduce forward,
    2 backward. Full recompute repeats the forward's."""
    if tp <= 1:
        return ()
    size = tokens * dim * activation_bytes
    if sequence_parallel:
        fwd = [Collective("all_gather", size, "forward"), Collective("reduce_scatter", size, "forward")] * 2
        bwd = [Collective("reduce_scatter", size, "backward"), Collective("all_gather", size, "backward")] * 2
        bwd += [Collective("all_gather", size, "backward", overlappable=True)] * 2
    else:
        fwd = [Collective("all_reduce", size, "forward")] * 2
        bwd = [Collective("all_reduce", size, "backward")] * 2
    again = [Collective(c.op, c.nbytes, "recompute") for c in fwd] if recompute else []
    return tuple(fwd + bwd + again)


def tp_bytes_per_layer(*, dim: int, tokens: int, tp: int, sequence_parallel: bool, recompute: bool = False) -> float:
    """Bytes (nccl-tests' S, summed) of the TP collectives of one layer per micro-batch."""
    return sum(
        c.nbytes for c in tp_collectives(dim=dim, tokens=tokens, tp=tp, sequence_parallel=sequence_parallel,
                                         recompute=recompute)
    )  # fmt: skip


def cp_kv_bytes(*, seq_len: int, micro_batch: int, kv_heads_local: int, head_dim: int, element_bytes: int = 2) -> int:
    """The all-gathered K and V of one layer on one GPU (the whole sequence, the local KV heads):
    the S of the all_gather (forward) and of the reduce_scatter of their gradients (backward)."""
    return 2 * micro_batch * seq_len * kv_heads_local * head_dim * element_bytes


def pp_activation_bytes(*, tokens: int, dim: int, tp: int, sequence_parallel: bool, element_bytes: int = 2) -> int:
    """Bytes one GPU sends to the next stage per micro-batch and chunk boundary: the activation,
    a 1/t sequence shard per TP rank under SP (Megatron's scatter-gather of pipeline tensors)."""
    return tokens * dim * element_bytes // (tp if sequence_parallel else 1)
