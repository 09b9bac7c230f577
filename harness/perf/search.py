"""The planner: enumerate the layouts of a model on a cluster, keep those that pass the layout
rules and fit in memory, rank them by projected step time.

Candidates: tp ≤ GPUs per node dividing the heads, ffn_dim and vocabulary (KV heads divided or
replicated); cp > 1 only where the sequence is long (≥ 4K tokens per CP rank); pp a power of two
or a divisor of the layer count, with 1F1B and the interleaved schedule (v = 2, 4, 8 where the
micro-batches allow); dp what is left, sharded (FSDP), or replicated across nodes with FSDP
inside them (HSDP). Activation checkpointing is tried when a layout does not fit without it
(unless the caller fixed it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.perf.assumptions import DEFAULT, Assumptions
from harness.perf.device import Device
from harness.perf.layout import Layout, divisors, layout_problems, valid_tp
from harness.perf.shape import ModelShape
from harness.perf.step import StepEstimate, estimate_step
from harness.perf.workload import Workload

MIN_TOKENS_PER_CP_RANK = 4096
"""Context parallelism is considered only while each rank keeps at least this many tokens."""


@dataclass(frozen=True)
class Plan:
    """One candidate layout with its projection."""

    layout: Layout
    workload: Workload
    estimate: StepEstimate

    @property
    def fits(self) -> bool | None:
        return self.estimate.fits

    def to_row(self) -> dict[str, object]:
        e = self.estimate
        return {
            **self.layout.to_row(), "activation_checkpointing": self.workload.activation_checkpointing,
            "step_time_s": e.step_time_s, "tokens_per_s": e.tokens_per_s, "mfu": e.mfu,
            "bubble_fraction": e.bubble_fraction, "memory_per_device_bytes": e.memory.total_bytes, "fits": e.fits,
        }  # fmt: skip


def _pp_options(n_layers: int, limit: int) -> list[int]:
    powers = [1 << i for i in range(0, 12) if (1 << i) <= min(n_layers, limit)]
    divisors = [d for d in range(1, min(n_layers, limit) + 1) if n_layers % d == 0]
    return sorted(set(powers + divisors))


def candidate_layouts(
    shape: ModelShape, *, gpus: int, gpus_per_node: int, workload: Workload,
) -> list[Layout]:  # fmt: skip
    """Every resolved layout of `gpus` GPUs that passes the harness's layout rules."""
    found: list[Layout] = []
    seq, mb, batch = workload.seq_len, workload.micro_batch, workload.global_batch
    cps = [c for c in (1, 2, 4, 8, 16, 32, 64) if c == 1 or (seq // c >= MIN_TOKENS_PER_CP_RANK and seq % (2 * c) == 0)]
    for tp in valid_tp(shape, gpus_per_node):
        for cp in cps:
            for pp in _pp_options(shape.n_layers, gpus):
                model_parallel = tp * cp * pp
                if gpus % model_parallel:
                    continue
                dp = gpus // model_parallel
                if batch % (dp * mb):
                    continue
                m = batch // (dp * mb)
                schedules = [("1f1b", 1)]
                if pp > 1:
                    schedules += [
                        ("interleaved_1f1b", v) for v in (2, 4, 8) if shape.n_layers >= pp * v and m % pp == 0
                    ]
                node_ranks = max(1, gpus_per_node // (tp * cp)) if tp * cp < gpus_per_node else 1
                splits = [(1, dp)]
                if dp > node_ranks > 1 and dp % node_ranks == 0:
                    splits.append((dp // node_ranks, node_ranks))  # HSDP: shard inside a node, replicate across
                for schedule, v in schedules:
                    for replicate, shard in splits:
                        layout = Layout(dp_replicate=replicate, dp_shard=shard, tp=tp, pp=pp, cp=cp,
                                        pp_schedule=schedule, pp_virtual_stages=v, pp_microbatches=m,
                                        sequence_parallel=tp > 1)  # fmt: skip
                        if not layout_problems(layout, shape, world_size=gpus, seq_len=seq, global_batch=batch,
                                               micro_batch=mb, gpus_per_node=gpus_per_node):  # fmt: skip
                            found.append(layout)
    return found


def plan_layouts(
    shape: ModelShape, device: Device, workload: Workload, *, gpus: int, gpus_per_node: int = 8, top: int = 5,
    activation_checkpointing: bool | None = None, include_unfit: bool = False, assumptions: Assumptions = DEFAULT,
) -> list[Plan]:  # fmt: skip
    """The best `top` layouts by projected step time among those that fit. With `include_unfit`,
    the others follow; when none fits, those that need the least memory come first.
    `activation_checkpointing`: None tries without, then with, for each layout; True or False
    fixes it."""
    plans: list[Plan] = []
    choices = [activation_checkpointing] if activation_checkpointing is not None else [False, True]
    for layout in candidate_layouts(shape, gpus=gpus, gpus_per_node=gpus_per_node, workload=workload):
        for recompute in choices:
            work = dataclasses.replace(workload, activation_checkpointing=bool(recompute))
            estimate = estimate_step(shape, layout, work, device, gpus_per_node=gpus_per_node,
                                     assumptions=assumptions, advise=False)  # fmt: skip
            if estimate.fits is not False or include_unfit:
                plans.append(Plan(layout, work, estimate))
                if estimate.fits is not False:
                    break
    if any(p.fits is not False for p in plans):
        plans.sort(key=lambda p: (p.fits is False, p.estimate.step_time_s))
    else:  # nothing fits: the layouts closest to fitting first
        plans.sort(key=lambda p: (p.estimate.memory.total_bytes, p.estimate.step_time_s))
    return plans[:top]


def usable_gpu_counts(
    shape: ModelShape, *, limit: int, gpus_per_node: int, workload: Workload, layout: Layout | None = None,
) -> list[int]:  # fmt: skip
    """GPU counts ≤ limit that some layout (or the given one's tp, cp, pp, dp_replicate) can use,
    largest first: the products of the candidate degrees with a data-parallel degree that divides
    the global batch."""
    mb, batch = workload.micro_batch, workload.global_batch
    dps = divisors(batch // mb) if batch % mb == 0 else []
    if layout is not None:
        fixed_products = {layout.tp * layout.cp * layout.pp}
        dps = [d for d in dps if d % layout.dp_replicate == 0]
    else:
        cps = [
            c
            for c in (1, 2, 4, 8, 16, 32, 64)
            if c == 1 or (workload.seq_len // c >= MIN_TOKENS_PER_CP_RANK and workload.seq_len % (2 * c) == 0)
        ]
        fixed_products = {t * c * p for t in valid_tp(shape, gpus_per_node) for c in cps
                          for p in _pp_options(shape.n_layers, limit)}  # fmt: skip
    counts = {f * d for f in fixed_products for d in dps if f * d <= limit}
    return sorted(counts, reverse=True)
