"""Running jobs: in this process (tasks that start no ranks), through the harness's own local
launcher (the supervisor writes config.json, the ranks read it), or as one rank of an external
launcher (torchrun, srun, mpiexec: every rank loaded the command line itself).

The life of one rank: join the job, record the run (rank 0), run the task, record how it ended,
and exit cleanly. Failures on any rank, Ctrl-C and SIGTERM end as a manifest that says so, never
as a lost run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus

from harness import devices, display, dist, faults, launch, peers, tasks
from harness.config import compose as composer
from harness.config.compose import quote
from harness.config.job import JOB_FILE, Job
from harness.config.schema import number_keys
from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError, RunInterrupted
from harness.load import Invocation, build, hook, needs_ranks
from harness.results import RunRecord, read_run, write_sweep_summary
from harness.results.run import MANIFEST, RecordError, discard_unrecorded, write_rank_file
from harness.tasks import Outcome

_signalled: list[str] = []
_parent: list[int] = []
FLIGHT_DIR = "flight-recorder"
"""Where each failing rank leaves its flight recorder dump, inside the run directory."""
ORPHANED = "the harness supervisor died"
"""What an orphaned rank's record says (its supervisor, which held the rendezvous store, is gone)."""
ORPHAN_SETTLE_S = 0.25
"""How long a signalled rank watches for its supervisor's death before it asks its peers."""
STALE_HEARTBEAT_S = 5.0
"""A rank whose heartbeat (every second) is older than this, and that reported nothing, has
stopped answering."""


def _orphaned(settle_s: float = 0.0) -> bool:
    """True in a rank whose supervisor died (the kernel's parent-death signal woke it): the
    rendezvous store lived in the supervisor, so nothing can be asked of it. The signal comes
    when the thread that started this rank exits, which under SIGKILL can be a moment before
    the supervisor's last thread does (getppid() changes then): `settle_s` waits for that."""
    if not _parent:
        return False
    deadline = time.monotonic() + settle_s
    while os.getppid() == _parent[0]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _on_signal(signum: int, _frame: Any) -> None:
    name = signal.Signals(signum).name
    _signalled.append(name)
    if _orphaned():
        raise RunInterrupted(f"interrupted by {name}: {ORPHANED}")
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
    if not needs_ranks(job):
        # A task without ranks (a projection, a results command, a dry run) started under a
        # launcher (srun, torchrun) runs once, on rank 0, and starts no process group.
        return run_here(job) if outer is None or outer.rank == 0 else EXIT_OK
    if outer is not None:
        return run_rank(job, outer)
    return supervise(job)


def supervise(job: Job) -> int:
    """Start the job's ranks on this host and stay as their supervisor: the job file is written
    first, the ranks read it, and this process closes the record if rank 0 could not."""
    try:
        job_file = job.write(job.run_dir)
    except RecordError as exc:
        return _unrecorded(job, exc)
    ended = launch.launch_local(job.nproc, job_file, job.run_dir, job.config.launch.grace_s)
    if not (job.run_dir / MANIFEST).exists():  # rank 0 ended before it could write one
        try:
            record = RunRecord.create(job.config.results.dir, task=job.task, config=manifest_config(job),
                                      keep=number_keys(), launcher="local", world_size=job.nproc,
                                      run_id=job.run_id, sweep_id=job.sweep_id)  # fmt: skip
            status = "failed" if ended.status == "ok" else ended.status
            record.finish(status, ended.error or "rank 0 ended before writing its record",
                          exit_code=ended.code or EXIT_FAILED)  # fmt: skip
        except RecordError as exc:
            return _unrecorded(job, exc)
    display.console.print(f"results: {job.run_dir}")
    return ended.code or (EXIT_OK if read_run(job.run_dir).status == "ok" else EXIT_FAILED)


def _unrecorded(job: Job, exc: RecordError) -> int:
    """No record of the run could be written (a full disk): one line, and no folder left that
    could be taken for a result."""
    discard_unrecorded(job.run_dir)
    display.error_line(f"{exc.strerror}; the run was not recorded")
    return EXIT_FAILED


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
    if record is None:  # a command that keeps no record (or could not start one): its one error line
        if task.records:
            discard_unrecorded(job.run_dir)
        if outcome.show:
            outcome.show()
        if outcome.status != "ok":
            display.error_line(outcome.error or outcome.status)
        return outcome.code
    return _close(record, outcome, show_path=True).code


def rank_main(job_file: Path) -> int:
    """`harness _rank config.json`: a rank started by the harness's own launcher (it ends when
    its supervisor dies)."""
    outer = dist.detect()
    if outer is None:
        raise ConfigError("'_rank' runs under the harness's own launcher")
    _parent.append(os.getppid())
    peers.die_with_parent(_parent[0])
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
    heartbeat = None
    try:
        cfg = job.config
        ctx = dist.init(launch_env, job.device_type, cfg.launch.timeout_s, cfg.launch.bootstrap,
                        flight_dir=str(job.run_dir / FLIGHT_DIR))  # fmt: skip
        if ctx.launch.launcher != "local":  # each rank of an outer launcher named a run: rank 0's is the one
            job = replace(job, run_id=dist.broadcast_object(ctx, job.run_id))
        heartbeat = peers.Heartbeat(ctx)
        if ctx.is_root:
            record = _create_record(job, ctx.launch.launcher, ctx.world_size)
            record.start_heartbeat()
        info = {"rank": ctx.rank, "local_rank": ctx.launch.local_rank, "host": dist.host_name()}
        infos = dist.gather_objects(ctx, {**info, **devices.describe(ctx.device)})
        if infos:
            ctx.hosts = {i["rank"]: i["host"] for i in infos}
        if record and infos:
            record.update(hosts=sorted({i["host"] for i in infos}), devices=infos, rendezvous=ctx.rendezvous)
        outcome = hook(tasks.TASKS[job.task], "run")(job, ctx, record)
    except BaseException as exc:  # every way a rank can end is recorded
        crashed = True
        # Finish the record before anything else can stop this rank (the launcher's SIGTERM to
        # survivors, a second Ctrl-C).
        _ignore_signals()
        outcome = _failure(ctx, job, exc, record)
    finally:
        _ignore_signals()  # nothing may cut the record or the teardown short
        external = bool(ctx and ctx.launch.launcher != "local")
        outcome = _close(record, outcome, show_path=external)
        if record is None and external and ctx and ctx.is_root and outcome.status != "ok":
            display.error_line(f"run {outcome.status}: {outcome.error}")  # no record, and no supervisor to say it
    # Only rank 0 knows whether a check failed: health is "no rank crashed", so that every rank
    # passes the final barrier together (on NCCL a skipped barrier leaves the others waiting).
    dist.shutdown(ctx, healthy=not crashed)
    if heartbeat:  # beats through the final barrier: a rank done early must not look hung
        heartbeat.stop()
    return outcome.code


def _what(exc: BaseException) -> str:
    """An exception in one line: 'RuntimeError: boom'."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    if isinstance(exc, RunInterrupted):
        return str(exc)
    if isinstance(exc, RecordError):  # 'cannot write rows.jsonl in DIR: No space left on device'
        return str(exc.strerror)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _failure(ctx: dist.DistContext | None, job: Job, exc: BaseException, record: RunRecord | None = None) -> Outcome:
    """The outcome of an exception on this rank (or in a task without ranks). Every rank leaves
    its error in the store and its flight recorder in the run directory; rank 0 names who failed
    first (its own error, its peers' reports, ranks that stopped answering)."""
    interrupted = isinstance(exc, RunInterrupted | KeyboardInterrupt) or bool(_signalled)
    what = _what(exc)
    if ctx is None:
        rank = "?" if needs_ranks(job) else 0
        if isinstance(exc, ConfigError):
            return Outcome("failed", str(exc), EXIT_BAD_INPUT)
        if not interrupted and not isinstance(exc, RecordError):
            traceback.print_exc()
        return Outcome("interrupted" if interrupted else "failed", f"rank {rank}: {what}",
                       EXIT_INTERRUPTED if interrupted else EXIT_FAILED)  # fmt: skip
    if _orphaned(ORPHAN_SETTLE_S if _signalled else 0.0):  # no store, no peers to ask: record what happened
        if ORPHANED not in what:  # the signal handler ran before getppid() showed the new parent
            what = f"{what}: {ORPHANED}"
        return Outcome("interrupted", f"rank {ctx.rank}: {what}", EXIT_INTERRUPTED)
    peers.report_error(ctx, "interrupted" if interrupted else "failed", what)
    flight = peers.flight_record()
    if flight:
        write_rank_file(job.run_dir, f"{FLIGHT_DIR}/rank-{ctx.rank}.json", flight)
    if interrupted or isinstance(exc, ConfigError | RecordError):
        pass  # those say all in one line
    elif not ctx.is_root and faults.is_consequence(what):  # a peer's failure seen from here: rank 0 names it
        print(f"rank {ctx.rank}: {what[:300]}", file=sys.stderr)
    else:
        traceback.print_exc()
    if not ctx.is_root:
        code = EXIT_INTERRUPTED if interrupted else EXIT_BAD_INPUT if isinstance(exc, ConfigError) else EXIT_FAILED
        return Outcome("interrupted" if interrupted else "failed", what, code)
    failures, peers_failed = _attribute(ctx)
    if record is not None:
        dump = peers.read_flight_record(flight) if flight else None
        hung = peers.hung_collective(dump, faults.is_consequence(what)) if dump else None
        files = sorted(p.name for p in (job.run_dir / FLIGHT_DIR).glob("rank-*.json"))
        with contextlib.suppress(RecordError):  # a full disk: finish tries again with less
            recorder = {"dir": FLIGHT_DIR, "files": files, "hung": hung} if files else None
            record.update(failures=[f.to_dict() for f in failures], flight_recorder=recorder)
    error = faults.describe(failures) or f"rank {ctx.rank}: {what}"
    if peers_failed:
        return Outcome("failed", error, EXIT_FAILED)
    if interrupted:
        return Outcome("interrupted", error, EXIT_INTERRUPTED)
    if isinstance(exc, ConfigError):  # found only once the world was known (groups that do not divide it)
        return Outcome("failed", error, EXIT_BAD_INPUT)
    return Outcome("failed", error, EXIT_FAILED)


def _attribute(ctx: dist.DistContext) -> tuple[list[faults.Failure], bool]:
    """Rank 0: every rank's failure as the store shows it, the first one named; and whether a
    peer failed (rather than was interrupted). A rank that reported nothing and whose heartbeat
    went stale stopped answering (a hang, or a process killed without a word)."""
    deadline = time.monotonic() + 3.0
    while True:
        reports = dict(peers.peer_errors(ctx))
        ages = peers.heartbeat_ages(ctx)
        silent = {r: a for r, a in ages.items() if r not in reports}
        # A silent rank still beating may be about to report (or to be killed): wait a little.
        if all(a is None or a > STALE_HEARTBEAT_S for a in silent.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    found = [faults.Failure(rank, ctx.hosts.get(rank), message, faults.iso(when))
             for rank, (_kind, message, when) in reports.items()]  # fmt: skip
    for rank, age in silent.items():
        if age is None or age > STALE_HEARTBEAT_S:
            since = "never beat" if age is None else f"last heartbeat {age:.0f} s before rank 0 gave up"
            last = faults.iso(time.time() - age) if age is not None else None
            found.append(faults.Failure(rank, ctx.hosts.get(rank), f"stopped answering ({since})", last))
    peers_failed = any(kind == "failed" for rank, (kind, *_) in reports.items() if rank != ctx.rank) or any(
        age is None or age > STALE_HEARTBEAT_S for age in silent.values())  # fmt: skip
    return faults.rank_order(found), peers_failed


def _close(record: RunRecord | None, outcome: Outcome, *, show_path: bool) -> Outcome:
    """Rank 0: the final manifest, then what the task shows, then the results line. Returns the
    outcome, failed when the record could not be finished (a full disk: one line says so)."""
    if record is None:
        return outcome
    # What the task shows goes into console.log too; then the record is final and read-only.
    if outcome.show:
        outcome.show()
    if outcome.status != "ok":
        display.error_line(f"run {outcome.status}: {outcome.error}")
    display.log_to(None)
    try:
        record.finish(outcome.status, outcome.error, exit_code=outcome.code, reason=outcome.reason)
    except RecordError as exc:
        if outcome.status == "ok":  # a failed run has said so already; the record adds why it is short
            display.error_line(str(exc.strerror))
        outcome = Outcome("failed", str(exc.strerror), outcome.code or EXIT_FAILED)
    if show_path and (record.path / MANIFEST).exists():  # the local launcher prints it after its ranks end
        display.console.print(f"results: {record.path}")
    return outcome
