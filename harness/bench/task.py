"""`harness bench` on one rank: plan with the real world size, measure, record, summarise, plot."""

from __future__ import annotations

import torch
import torch.distributed

from harness import devices, display, dist, plots, telemetry
from harness.bench import BENCHMARKS, PlanEnv
from harness.bench.driver import Fault, SuitePlan, Telemetry, plan_suite, run_suite
from harness.config.schema import RunConfig
from harness.config.validate import bench_spec
from harness.errors import EXIT_FAILED, EXIT_OK
from harness.results import RunRecord
from harness.runner import Outcome


def plan_for(
    cfg: RunConfig, device_type: str, *, world_size: int | None, ranks_per_host: int, free_memory: int | None = None
) -> SuitePlan:
    """The suite `cfg` asks for, on this device and world; ConfigError when it cannot run."""
    env = PlanEnv(
        device_type=device_type,
        free_memory_bytes=free_memory if free_memory is not None else devices.free_memory_bytes(device_type),
        world_size=world_size,
        ranks_per_host=ranks_per_host,
        device_name=devices.device_name(device_type),
    )
    return plan_suite(list(cfg.bench.names), bench_spec(cfg.bench, cfg.seed), env)


def _telemetry(cfg: RunConfig, ctx: dist.DistContext) -> tuple[Telemetry, str | None]:
    if not cfg.telemetry.enabled:
        return Telemetry(), None
    uuid = devices.gpu_uuid(ctx.device) if ctx.device.type == "cuda" else None
    source, note = telemetry.make_source(ctx.device.type, ctx.device.index or 0, uuid=uuid)
    return Telemetry(source, cfg.telemetry.interval_ms / 1000), note


def run(cfg: RunConfig, ctx: dist.DistContext, record: RunRecord | None) -> Outcome:
    """Measure the suite on this rank; rank 0 records it."""
    # Planned again now that the world is known (sizes round to the group size).
    # Every rank plans with the smallest free memory of any rank, so that all refuse or none does.
    per_host = ctx.launch.local_world_size if ctx.device.type == "cpu" else 1
    free = torch.tensor(
        [devices.free_memory_bytes(ctx.device.type, in_rank=True)], dtype=torch.int64, device=ctx.device
    )
    torch.distributed.all_reduce(free, op=torch.distributed.ReduceOp.MIN)
    plan = plan_for(cfg, ctx.device.type, world_size=ctx.world_size, ranks_per_host=per_host, free_memory=int(free))
    tele, tele_note = _telemetry(cfg, ctx)
    notes = list(plan.notes) + ([tele_note] if tele_note else [])
    if record:
        record.update(notes=notes)
        for note in notes:
            display.note(note)
    with display.Progress(plan.total, enabled=ctx.is_root) as progress:
        result = run_suite(
            plan, ctx, fault=Fault(cfg.debug.fault, cfg.debug.fault_rank), tele=tele,
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
