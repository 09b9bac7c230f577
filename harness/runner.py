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

from harness import devices, display, dist
from harness.bench import BENCHMARKS
from harness.bench.driver import Fault, SuitePlan, run_suite
from harness.config.schema import RunConfig
from harness.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, RunInterrupted
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


def run_bench(cfg: RunConfig, plan: SuitePlan, launch: dist.LaunchEnv, device_type: str) -> int:
    """Run `harness bench` as one rank of the job; returns the exit code (after the group is
    torn down, so the caller can os._exit)."""
    install_signal_handlers()
    ctx: dist.DistContext | None = None
    record: RunRecord | None = None
    status, error, code = "ok", None, EXIT_OK
    result = None
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
        if record and infos:
            record.update(hosts=sorted({i["host"] for i in infos}), devices=infos)
        result = run_suite(
            plan,
            ctx,
            fault=Fault(cfg.debug.fault, cfg.debug.fault_rank),
            on_rows=(lambda _bench, rows: record.add_rows(rows)) if record else None,
            on_progress=display.progress if ctx.is_root else None,
        )
        if ctx.is_root and result.failed:
            status, code = "failed", EXIT_FAILED
            error = f"correctness check failed in {result.failed} of {result.total} rows"
    except BaseException as exc:  # every way a rank can end is recorded
        # Finish the record before anything else can stop this rank (the launcher's SIGTERM to
        # survivors, a second Ctrl-C).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        interrupted = isinstance(exc, RunInterrupted | KeyboardInterrupt) or bool(_signalled)
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
        else:
            status, code = "failed", EXIT_FAILED
            traceback.print_exc()
    finally:
        if record:
            record.finish(status, error)
            if result and result.rows:
                display.tables(result.rows, BENCHMARKS)
            if status != "ok":
                display.error_line(f"run {status}: {error}")
            if ctx and ctx.launch.launcher != "local":  # the local launcher prints it after its ranks end
                display.console.print(f"results: {record.path}")
    dist.shutdown(ctx, healthy=code == EXIT_OK)
    return code
