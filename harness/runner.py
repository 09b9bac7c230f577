"""The life of one rank: join the job, record the run (rank 0), run the task, record how it
ended, and exit cleanly. Failures on any rank, Ctrl-C and SIGTERM end as a manifest that says
so, never as a lost run."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import devices, display, dist
from harness.config.schema import RunConfig
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


# Config sections a task does not read stay out of its manifest.
_ACCEPT_ONLY = ("accept", "site", "hardware")
_SECTIONS = {
    "bench": ("model", "engine", "data", "train", "logger", "slurm", *_ACCEPT_ONLY),
    "train": ("bench", "slurm", "fault", *_ACCEPT_ONLY),
    "accept": ("model", "engine", "data", "train", "logger", "slurm"),
}


def task_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config of this task, for the manifest."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _SECTIONS.get(cfg.task, ())}


@dataclass
class Outcome:
    """How a task ended on this rank, and what rank 0 shows after the record is closed."""

    status: str = "ok"
    error: str | None = None
    code: int = EXIT_OK
    show: Callable[[], None] | None = None


def run_task(cfg: RunConfig, launch: dist.LaunchEnv, device_type: str) -> int:
    """Run `cfg.task` as one rank of the job; returns the exit code (after the group is torn
    down, so the caller can os._exit)."""
    from harness.bench import task as bench_task

    bodies = {"bench": bench_task.run}
    if cfg.task == "train":
        from harness.train import task as train_task

        bodies["train"] = train_task.run
    if cfg.task == "accept":
        from harness.accept import task as accept_task

        bodies["accept"] = accept_task.run
    install_signal_handlers()
    ctx: dist.DistContext | None = None
    record: RunRecord | None = None
    outcome = Outcome()
    crashed = False
    try:
        ctx = dist.init(launch, device_type, cfg.launch.timeout_s, cfg.launch.bootstrap)
        if ctx.is_root:
            record = RunRecord.create(
                cfg.results.dir, task=cfg.task, config=task_config(cfg), launcher=ctx.launch.launcher,
                world_size=ctx.world_size, run_id=os.environ.get("HARNESS_RUN_ID") or None,
            )  # fmt: skip
        info = {"rank": ctx.rank, "local_rank": ctx.launch.local_rank, "host": dist.host_name()}
        infos = dist.gather_objects(ctx, {**info, **devices.describe(ctx.device)})
        if record and infos:
            record.update(hosts=sorted({i["host"] for i in infos}), devices=infos, rendezvous=ctx.rendezvous)
        outcome = bodies[cfg.task](cfg, ctx, record)
    except BaseException as exc:  # every way a rank can end is recorded
        crashed = True
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
            outcome = Outcome("failed", "; ".join(peers), EXIT_FAILED)
        elif interrupted:
            outcome = Outcome("interrupted", error, EXIT_INTERRUPTED)
        elif bad_input:  # found only once the world was known (e.g. groups that do not divide it)
            outcome = Outcome("failed", error, EXIT_BAD_INPUT)
        else:
            outcome = Outcome("failed", error, EXIT_FAILED)
            traceback.print_exc()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # nothing may cut the record or the teardown short
            signal.signal(sig, signal.SIG_IGN)
        if record:
            record.finish(outcome.status, outcome.error)
            if outcome.show:
                outcome.show()
            if outcome.status != "ok":
                display.error_line(f"run {outcome.status}: {outcome.error}")
            if ctx and ctx.launch.launcher != "local":  # the local launcher prints it after its ranks end
                display.console.print(f"results: {record.path}")
    # Only rank 0 knows whether a check failed: health is "no rank crashed", so that every rank
    # passes the final barrier together (on NCCL a skipped barrier leaves the others waiting).
    dist.shutdown(ctx, healthy=not crashed)
    return outcome.code
