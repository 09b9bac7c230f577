"""Running jobs: in this process (tasks that start no ranks), through the harness's own local
launcher (the supervisor writes config.json, the ranks read it), or as one rank of an external
launcher (torchrun, srun, mpiexec: every rank loaded the command line itself).

The life of one rank: join the job, record the run (rank 0), run the task, record how it ended,
and exit cleanly. Failures on any rank, Ctrl-C and SIGTERM end as a manifest that says so, never
as a lost run.
"""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus

from harness import devices, display, dist, launch, tasks
from harness.config import compose as composer
from harness.config.compose import quote
from harness.config.job import JOB_FILE, Job
from harness.config.schema import number_keys
from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError, RunInterrupted
from harness.load import Invocation, build, hook, needs_ranks
from harness.results import RunRecord, read_run, write_sweep_summary
from harness.tasks import Outcome

_signalled: list[str] = []


def _on_signal(signum: int, _frame: Any) -> None:
    name = signal.Signals(signum).name
    _signalled.append(name)
    raise RunInterrupted(f"interrupted by {name}")


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM (Ctrl-C, scancel, a launcher stopping its ranks) become RunInterrupted."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def manifest_config(job: Job) -> dict[str, Any]:
    """The config the manifest records: the sections this task reads, secrets left unresolved."""
    sections = tasks.TASKS[job.task].all_sections
    return {k: v for k, v in job.config_dict().items() if k in sections}


# ---------------------------------------------------------------- jobs


def run_jobs(jobs: list[Job]) -> int:
    """Run every job in order; a sweep ends with one line per element. The worst exit code wins."""
    codes = [run_job(job) for job in jobs]
    if len(jobs) > 1 and dist.detect() is None:
        sweep_summary(jobs, codes)
    return max(codes, default=EXIT_OK)


def sweep_summary(jobs: list[Job], codes: list[int]) -> None:
    """One line per element of a sweep (status, headline, run directory), also kept as
    sweeps/<sweep id>/summary.json in the results directory."""
    entries = []
    for index, (job, code) in enumerate(zip(jobs, codes, strict=True)):
        run = read_run(job.run_dir)
        entries.append({"element": index, "run_id": job.run_id, "status": run.status, "exit_code": code,
                        "headline": str(run.headline) if run.headline else None})  # fmt: skip
    sweep_id = jobs[0].sweep_id or "sweep"
    display.console.print(f"sweep {sweep_id}: {len(jobs)} runs")
    for entry in entries:
        display.console.print(f"  [{entry['element']}] {entry['status']:<11} {entry['headline'] or '-'}  "
                              f"{Path(jobs[0].config.results.dir) / entry['run_id']}", markup=False)  # fmt: skip
    write_sweep_summary(jobs[0].config.results.dir, sweep_id, entries)


def run_with_hydra_launcher(inv: Invocation, jobs: list[Job]) -> int:
    """`-m hydra/launcher=NAME` (submitit_slurm, submitit_local): Hydra's launcher runs the jobs,
    every one of them validated here first. Its launcher composes each job again where it runs
    (that is its API); the task function builds the job from that config through the same path
    as the command line. Hydra's per-job folders go under sweeps/<sweep id>/ and hold a link to
    the run."""
    sweep_id = jobs[0].sweep_id or str(uuid.uuid4())
    sweep_dir = Path(jobs[0].config.results.dir).resolve() / "sweeps" / sweep_id
    overrides = [*inv.overrides, f"results.sweep_id={sweep_id}", f"hydra.sweep.dir={quote(str(sweep_dir))}"]
    returns = composer.hydra().multirun(config_name=composer.CONFIG_NAME, task_function=run_from_hydra,
                                        overrides=overrides, with_log_configuration=False)  # fmt: skip
    codes = []
    for batch in returns or []:
        for ret in batch:
            done = ret.status == JobStatus.COMPLETED and isinstance(ret._return_value, int)
            codes.append(ret._return_value if done else EXIT_FAILED)
    return max(codes, default=EXIT_FAILED)


def run_job(job: Job) -> int:
    """One job, wherever it has to run."""
    outer = dist.detect()
    if outer is not None:
        return run_rank(job, outer)
    if not needs_ranks(job):
        return run_here(job)
    return supervise(job)


def supervise(job: Job) -> int:
    """Start the job's ranks on this host and stay as their supervisor: the job file is written
    first, the ranks read it, and this process closes the record if rank 0 could not."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    job_file = job.write(job.run_dir)
    code = launch.launch_local(job.nproc, job_file, job.run_dir)
    if (job.run_dir / "manifest.json").exists():
        display.console.print(f"results: {job.run_dir}")
    return code


def run_here(job: Job) -> int:
    """A task that starts no ranks (a plan, a projection, a results command), in this process."""
    install_signal_handlers()
    record = None
    task = tasks.TASKS[job.task]
    try:
        if task.records:
            record = _create_record(job, "local", world_size=1)
        outcome = hook(task, "run")(job, None, record)
    except ConfigError as exc:  # found only while running (a run directory that turned out damaged)
        outcome = Outcome("failed", str(exc), EXIT_BAD_INPUT)
    except BaseException as exc:
        outcome = _failure(None, job, exc)
    _ignore_signals()
    if record is None:  # a command that keeps no record: what it shows, or its one error line
        if outcome.show:
            outcome.show()
        if outcome.status != "ok":
            display.error_line(outcome.error or outcome.status)
        return outcome.code
    _close(record, outcome, show_path=True)
    return outcome.code


def rank_main(job_file: Path) -> int:
    """`harness _rank config.json`: a rank started by the harness's own launcher."""
    outer = dist.detect()
    if outer is None:
        raise ConfigError("'_rank' runs under the harness's own launcher")
    return run_rank(Job.read(job_file), replace(outer, launcher="local"))


def run_from_hydra(cfg: Any) -> int:
    """The task function of Hydra's launchers (submitit): the job from the config the launcher
    composed, through the same build as the command line; Hydra's job folder links to the run."""
    try:
        job = build(tasks.TASKS[str(cfg.task)], cfg, launch=dist.detect())
    except ConfigError as exc:
        display.error_line(str(exc))
        return EXIT_BAD_INPUT
    if dist.detect() is None or dist.detect().rank == 0:  # type: ignore[union-attr]
        with contextlib.suppress(Exception):  # Hydra's folder is a convenience, never the record
            link = Path(HydraConfig.get().runtime.output_dir) / "run"
            if not link.exists():
                link.symlink_to(job.run_dir.resolve())
    return run_job(job)


# ---------------------------------------------------------------- one rank


def _create_record(job: Job, launcher: str, world_size: int) -> RunRecord:
    record = RunRecord.create(job.config.results.dir, task=job.task, config=manifest_config(job), keep=number_keys(),
                              launcher=launcher, world_size=world_size, run_id=job.run_id,
                              sweep_id=job.sweep_id)  # fmt: skip
    if not (record.path / JOB_FILE).exists():  # under an external launcher, rank 0 writes it
        job.write(record.path)
    display.log_to(record.console_log())
    return record


def run_rank(job: Job, launch_env: dist.LaunchEnv) -> int:
    """Run the job as one rank; returns the exit code (after the group is torn down, so the
    caller can os._exit)."""
    install_signal_handlers()
    ctx: dist.DistContext | None = None
    record: RunRecord | None = None
    outcome = Outcome()
    crashed = False
    try:
        cfg = job.config
        ctx = dist.init(launch_env, job.device_type, cfg.launch.timeout_s, cfg.launch.bootstrap)
        if ctx.is_root:
            record = _create_record(job, ctx.launch.launcher, ctx.world_size)
        info = {"rank": ctx.rank, "local_rank": ctx.launch.local_rank, "host": dist.host_name()}
        infos = dist.gather_objects(ctx, {**info, **devices.describe(ctx.device)})
        if record and infos:
            record.update(hosts=sorted({i["host"] for i in infos}), devices=infos, rendezvous=ctx.rendezvous)
        outcome = hook(tasks.TASKS[job.task], "run")(job, ctx, record)
    except BaseException as exc:  # every way a rank can end is recorded
        crashed = True
        # Finish the record before anything else can stop this rank (the launcher's SIGTERM to
        # survivors, a second Ctrl-C).
        _ignore_signals()
        outcome = _failure(ctx, job, exc)
    finally:
        _ignore_signals()  # nothing may cut the record or the teardown short
        _close(record, outcome, show_path=bool(ctx and ctx.launch.launcher != "local"))
    # Only rank 0 knows whether a check failed: health is "no rank crashed", so that every rank
    # passes the final barrier together (on NCCL a skipped barrier leaves the others waiting).
    dist.shutdown(ctx, healthy=not crashed)
    return outcome.code


def _describe(rank: Any, exc: BaseException) -> str:
    text = str(exc).strip()
    return f"rank {rank}: {type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _peer_failures(ctx: dist.DistContext) -> list[str]:
    """Errors other ranks reported. A peer's failure reaches rank 0 as a broken connection, or
    as the SIGTERM its launcher sends to the survivors; the peer's own report says why."""
    time.sleep(0.2)  # the failing peer writes its report before it exits
    return [msg for rank, (kind, msg) in dist.peer_errors(ctx) if rank != ctx.rank and kind == "failed"]


def _failure(ctx: dist.DistContext | None, job: Job, exc: BaseException) -> Outcome:
    """The outcome of an exception on this rank (or in a task without ranks)."""
    interrupted = isinstance(exc, RunInterrupted | KeyboardInterrupt) or bool(_signalled)
    rank = ctx.rank if ctx else ("?" if needs_ranks(job) else 0)
    error = _describe(rank, exc)
    if isinstance(exc, KeyboardInterrupt):
        error = f"rank {rank}: interrupted by SIGINT"
    if ctx:
        dist.report_error(ctx, "interrupted" if interrupted else "failed", error)
    peers = _peer_failures(ctx) if ctx and ctx.is_root else []
    if peers:
        return Outcome("failed", "; ".join(peers), EXIT_FAILED)
    if interrupted:
        return Outcome("interrupted", error, EXIT_INTERRUPTED)
    if isinstance(exc, ConfigError):  # found only once the world was known (groups that do not divide it)
        return Outcome("failed", error, EXIT_BAD_INPUT)
    traceback.print_exc()
    return Outcome("failed", error, EXIT_FAILED)


def _close(record: RunRecord | None, outcome: Outcome, *, show_path: bool) -> None:
    """Rank 0: the final manifest, then what the task shows, then the results line."""
    if record is None:
        return
    # What the task shows goes into console.log too; then the record is final and read-only.
    if outcome.show:
        outcome.show()
    if outcome.status != "ok":
        display.error_line(f"run {outcome.status}: {outcome.error}")
    display.log_to(None)
    record.finish(outcome.status, outcome.error, exit_code=outcome.code, reason=outcome.reason)
    if show_path:  # the local launcher prints it after its ranks end
        display.console.print(f"results: {record.path}")
