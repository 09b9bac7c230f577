"""The life of one rank: join the job, record the run (rank 0), run the task, record how it
ended, and exit cleanly. Failures on any rank, Ctrl-C and SIGTERM end as a manifest that says
so, never as a lost run."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
import traceback
from typing import Any

from harness import devices, display, dist, plots, telemetry
from harness.bench import BENCHMARKS, PlanEnv
from harness.bench.driver import Fault, SuitePlan, Telemetry, plan_suite, run_suite
from harness.config.schema import RunConfig
from harness.config.validate import bench_spec
from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError, RunInterrupted
from harness.results import RunRecord

_signalled: list[str] = []


def _on_signal(signum: int, _frame: Any) -> None:
    name = signal.Signals(signum).name
    _signalled.append(name)
    raise RunInterrupted(f"interrupted by {name}")


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM (Ctrl-C, scancel, a launcher stopping its ranks) become RunInterrupted."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def _describe(ctx: dist.DistContext | None, exc: BaseException) -> str:
    text = str(exc).strip()
    return f"rank {ctx.rank if ctx else '?'}: {type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _peer_failures(ctx: dist.DistContext) -> list[str]:
    """Errors other ranks reported. A peer's failure reaches rank 0 as a broken connection, or
    as the SIGTERM its launcher sends to the survivors; the peer's own report says why."""
    time.sleep(0.2)  # the failing peer writes its report before it exits
    return [msg for rank, (kind, msg) in dist.peer_errors(ctx) if rank != ctx.rank and kind == "failed"]


def plan_for(cfg: RunConfig, device_type: str, *, world_size: int | None, ranks_per_host: int) -> SuitePlan:
    """The suite `cfg` asks for, on this device and world; ConfigError when it cannot run."""
    env = PlanEnv(
        device_type=device_type,
        free_memory_bytes=devices.free_memory_bytes(device_type),
        world_size=world_size,
        ranks_per_host=ranks_per_host,
        device_name=devices.device_name(device_type),
    )
    return plan_suite(list(cfg.bench.names), bench_spec(cfg.bench, cfg.seed), env)


def _telemetry(cfg: RunConfig, ctx: dist.DistContext) -> tuple[Telemetry, str | None]:
    if not cfg.telemetry.enabled:
        return Telemetry(), None
    source, note = telemetry.make_source(ctx.device.type, ctx.device.index or 0)
    return Telemetry(source, cfg.telemetry.interval_ms / 1000), note


def run_bench(cfg: RunConfig, launch: dist.LaunchEnv, device_type: str) -> int:
    """Run `harness bench` as one rank of the job; returns the exit code (after the group is
    torn down, so the caller can os._exit)."""
    install_signal_handlers()
    ctx: dist.DistContext | None = None
    record: RunRecord | None = None
    status, error, code = "ok", None, EXIT_OK
    result = None
    plan: SuitePlan | None = None
    try:
        ctx = dist.init(launch, device_type, cfg.launch.timeout_s)
        if ctx.is_root:
            record = RunRecord.create(
                cfg.results.dir,
                task=cfg.task,
                config=dataclasses.asdict(cfg),
                launcher=ctx.launch.launcher,
                world_size=ctx.world_size,
                run_id=os.environ.get("HARNESS_RUN_ID") or None,
            )
        info = {"rank": ctx.rank, "local_rank": ctx.launch.local_rank, "host": socket.gethostname()}
        infos = dist.gather_objects(ctx, {**info, **devices.describe(ctx.device)})
        # Planned again now that the world is known (sizes round to the group size).
        per_host = ctx.launch.local_world_size if device_type == "cpu" else 1
        plan = plan_for(cfg, device_type, world_size=ctx.world_size, ranks_per_host=per_host)
        tele, tele_note = _telemetry(cfg, ctx)
        notes = list(plan.notes) + ([tele_note] if tele_note else [])
        if record and infos:
            record.update(hosts=sorted({i["host"] for i in infos}), devices=infos, notes=notes)
            for note in notes:
                display.note(note)
        with display.Progress(plan.total, enabled=ctx.is_root) as progress:
            result = run_suite(
                plan, ctx, fault=Fault(cfg.debug.fault, cfg.debug.fault_rank), tele=tele,
                on_rows=(lambda _bench, rows: record.add_rows(rows)) if record else None,
                on_progress=progress.advance,
            )  # fmt: skip
        if record:
            summaries = {b.name: b.summary(result.rows.get(b.name, [])) for b, _ in plan.items}
            record.update(summary={k: v for k, v in summaries.items() if v})
            for name, png in plots.render(result.rows).items():
                record.add_file(name, png)
        if ctx.is_root and result.failed:
            status, code = "failed", EXIT_FAILED
            error = f"correctness check failed in {result.failed} of {result.total} rows"
    except BaseException as exc:  # every way a rank can end is recorded
        # Finish the record before anything else can stop this rank (the launcher's SIGTERM to
        # survivors, a second Ctrl-C).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        interrupted = isinstance(exc, RunInterrupted | KeyboardInterrupt) or bool(_signalled)
        bad_input = isinstance(exc, ConfigError)
        error = _describe(ctx, exc)
        if isinstance(exc, KeyboardInterrupt):
            error = f"rank {launch.rank}: interrupted by SIGINT"
        if ctx:
            dist.report_error(ctx, "interrupted" if interrupted else "failed", error)
        peers = _peer_failures(ctx) if ctx and ctx.is_root else []
        if peers:
            status, code, error = "failed", EXIT_FAILED, "; ".join(peers)
        elif interrupted:
            status, code = "interrupted", EXIT_INTERRUPTED
        elif bad_input:  # found only once the world was known (e.g. groups that do not divide it)
            status, code = "failed", EXIT_BAD_INPUT
        else:
            status, code = "failed", EXIT_FAILED
            traceback.print_exc()
    finally:
        if record:
            record.finish(status, error)
            if result and result.rows:
                display.tables(result.rows, BENCHMARKS)
                display.summaries(record.manifest.get("summary", {}))
            if status != "ok":
                display.error_line(f"run {status}: {error}")
            if ctx and ctx.launch.launcher != "local":  # the local launcher prints it after its ranks end
                display.console.print(f"results: {record.path}")
    dist.shutdown(ctx, healthy=code == EXIT_OK)
    return code
