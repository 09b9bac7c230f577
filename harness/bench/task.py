"""`harness bench` on one rank: plan with the real world size, measure, record, summarise, plot."""

from __future__ import annotations

import torch
import torch.distributed

from harness import devices, display, dist, plots, telemetry
from harness.bench import BENCHMARKS, PlanEnv
from harness.bench.driver import Fault, SuitePlan, Telemetry, plan_suite, run_suite
from harness.config.schema import RunConfig
from harness.config.validate import bench_spec
from harness.errors import EXIT_FAILED, EXIT_OK, ConfigError
from harness.results import RunRecord
from harness.runner import Outcome


def plan_for(
    cfg: RunConfig,
    device_type: str,
    *,
    world_size: int | None,
    ranks_per_host: int,
    free_memory: int | None = None,
    nodes: int | None = None,
) -> SuitePlan:
    """The suite `cfg` asks for, on this device and world; ConfigError when it cannot run."""
    env = PlanEnv(
        device_type=device_type,
        free_memory_bytes=free_memory if free_memory is not None else devices.free_memory_bytes(device_type),
        world_size=world_size,
        ranks_per_host=ranks_per_host,
        device_name=devices.device_name(device_type),
        nodes=nodes,
    )
    return plan_suite(list(cfg.bench.names), bench_spec(cfg.bench, cfg.seed), env)


def ranks_sharing_memory(ctx: dist.DistContext) -> int:
    """Ranks sharing one memory: CPU ranks share the host's RAM, GPU ranks each have their own."""
    return ctx.launch.local_world_size if ctx.device.type == "cpu" else 1


def min_free_memory(ctx: dist.DistContext) -> int:
    """The smallest free memory of any rank: every rank plans with it, so all refuse or none does."""
    free = torch.tensor(
        [devices.free_memory_bytes(ctx.device.type, in_rank=True)], dtype=torch.int64, device=ctx.device
    )
    torch.distributed.all_reduce(free, op=torch.distributed.ReduceOp.MIN)
    return int(free)


def node_count(ctx: dist.DistContext) -> int:
    """Nodes of the job (collective: every rank calls it). Ranks are placed node by node with
    the same count on each; a job with different counts per node (srun -N2 -n7) is refused on
    every rank alike, since the per-node stages would pair ranks that do not exist."""
    per_node = torch.tensor([ctx.launch.local_world_size, -ctx.launch.local_world_size], device=ctx.device)
    torch.distributed.all_reduce(per_node, op=torch.distributed.ReduceOp.MAX)
    most, fewest = int(per_node[0]), -int(per_node[1])
    if most != fewest:
        raise ConfigError(f"nodes run between {fewest} and {most} ranks; per-node stages need the same count on "
                          "every node (e.g. srun --ntasks-per-node)")  # fmt: skip
    return max(1, ctx.world_size // max(1, most))


def telemetry_for(cfg: RunConfig, ctx: dist.DistContext) -> tuple[Telemetry, str | None]:
    """The sampler settings and this rank's source (NVML by UUID, or the OS), with a note when
    NVML was wanted and is missing."""
    if not cfg.telemetry.enabled:
        return Telemetry(), None
    uuid = devices.gpu_uuid(ctx.device) if ctx.device.type == "cuda" else None
    source, note = telemetry.make_source(ctx.device.type, ctx.device.index or 0, uuid=uuid)
    return Telemetry(source, cfg.telemetry.interval_ms / 1000), note


def fault_of(cfg: RunConfig) -> Fault:
    """debug.fault, or fault.corrupt_rank / fault.slow_rank (the acceptance-test injections)."""
    kind, rank = cfg.debug.fault, cfg.debug.fault_rank
    if cfg.fault.corrupt_rank is not None:
        kind, rank = "wrong_result", int(cfg.fault.corrupt_rank)
    slow = None if cfg.fault.slow_rank is None else int(cfg.fault.slow_rank)
    return Fault(kind, rank, slow, float(cfg.fault.slow_factor))


def run(cfg: RunConfig, ctx: dist.DistContext, record: RunRecord | None) -> Outcome:
    """Measure the suite on this rank; rank 0 records it."""
    # Planned again now that the world is known (sizes round to the group size).
    plan = plan_for(cfg, ctx.device.type, world_size=ctx.world_size, ranks_per_host=ranks_sharing_memory(ctx),
                    free_memory=min_free_memory(ctx), nodes=node_count(ctx))  # fmt: skip
    tele, tele_note = telemetry_for(cfg, ctx)
    notes = list(plan.notes) + ([tele_note] if tele_note else [])
    if record:
        record.update(notes=notes)
        for note in notes:
            display.note(note)
    with display.Progress(plan.total, enabled=ctx.is_root) as progress:
        result = run_suite(
            plan, ctx, fault=fault_of(cfg), tele=tele,
            on_rows=(lambda _bench, rows: record.add_rows(rows)) if record else None,
            on_progress=progress.advance,
        )  # fmt: skip
    if not record:
        return Outcome()
    summaries = {b.name: b.summary(result.rows.get(b.name, [])) for b, _ in plan.items}
    record.update(summary={k: v for k, v in summaries.items() if v})
    for name, png in plots.render(result.rows).items():
        record.add_file(name, png)

    def show() -> None:
        if result.rows:
            display.tables(result.rows, BENCHMARKS)
            display.summaries(record.manifest.get("summary", {}))

    if result.failed:
        return Outcome(
            "failed", f"correctness check failed in {result.failed} of {result.total} rows", EXIT_FAILED, show
        )
    return Outcome("ok", None, EXIT_OK, show)
