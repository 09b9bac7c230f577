"""`harness bench`: validate (before any rank starts) and run on one rank: plan with the real
world size, measure, record, summarise, plot."""

from __future__ import annotations

from dataclasses import dataclass

from harness import devices, display, plots
from harness.bench import ranks, registry
from harness.bench.base import BenchSpec, PlanEnv
from harness.bench.driver import Fault, plan_suite, run_suite
from harness.bench.spec import bench_spec
from harness.config.job import Job
from harness.dist import DistContext
from harness.errors import EXIT_FAILED, EXIT_OK, ConfigError, did_you_mean
from harness.results import RunRecord
from harness.tasks import Outcome


@dataclass(frozen=True)
class BenchPlan:
    """What `harness bench` will run: the benchmarks, the driver's options, injected faults."""

    names: tuple[str, ...]
    spec: BenchSpec
    fault: Fault
    telemetry_interval_s: float | None
    """Seconds between telemetry samples; None: telemetry off."""


def check_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The benchmark names, each known (ConfigError naming the closest otherwise)."""
    choices = [*registry.BENCHMARKS, *registry.ALIASES]
    for name in names:
        if not registry.is_known(name):
            raise ConfigError(f"unknown benchmark {name!r}{did_you_mean(name, choices)}; choices: {', '.join(choices)}")
    return names


def validate(job: Job) -> BenchPlan:
    """Every check of `harness bench` that can run before a rank starts."""
    cfg = job.config
    names = check_names(tuple(cfg.bench.names))
    spec = bench_spec(cfg.bench, cfg.seed)
    fault = ranks.fault_of(cfg, job.world_size)
    per_host = ranks.ranks_per_host(job)
    env = PlanEnv(
        device_type=job.device_type,
        free_memory_bytes=devices.free_memory_bytes(job.device_type),
        world_size=job.world_size,
        ranks_per_host=per_host,
        device_name=devices.device_name(job.device_type),
    )
    plan_suite(names, spec, env)  # refuses what cannot run; the ranks plan again with the real world
    interval = cfg.telemetry.interval_ms / 1000 if cfg.telemetry.enabled else None
    return BenchPlan(names, spec, fault, interval)


def run(job: Job, ctx: DistContext, record: RunRecord | None) -> Outcome:
    """Measure the suite on this rank; rank 0 records it."""
    plan: BenchPlan = job.plan
    # Planned again now that the world is known (sizes round to the group size, memory is the
    # smallest any rank has free, nodes are counted).
    suite = plan_suite(plan.names, plan.spec, ranks.plan_env(ctx))
    tele, tele_note = ranks.telemetry_for(plan.telemetry_interval_s, ctx)
    notes = list(suite.notes) + ([tele_note] if tele_note else [])
    if record:
        record.update(notes=notes)
        for note in notes:
            display.note(note)
    with display.Progress(suite.total, enabled=ctx.is_root) as progress:
        result = run_suite(
            suite, ctx, fault=plan.fault, tele=tele, device_name=devices.device_name(ctx.device.type),
            on_rows=(lambda _bench, rows: record.add_rows(rows)) if record else None,
            on_progress=progress.advance,
        )  # fmt: skip
    if not record:
        return Outcome()
    summaries = {b.name: b.summary(result.rows.get(b.name, [])) for b, _ in suite.items}
    record.update(summary={k: v for k, v in summaries.items() if v})
    for name, png in plots.render(result.rows).items():
        record.add_file(name, png)

    def show() -> None:
        if result.rows:
            display.tables(result.rows, {b.name: b for b, _ in suite.items})
            display.summaries(record.manifest.get("summary", {}))

    if result.failed:
        return Outcome(
            "failed", f"correctness check failed in {result.failed} of {result.total} rows", EXIT_FAILED, show
        )
    return Outcome("ok", None, EXIT_OK, show)
