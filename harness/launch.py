"""Starting N local ranks when the harness is not already under a launcher.

The ranks are started by torch's elastic launcher (what torchrun uses), so a local run goes
through exactly the code path of a torchrun job. Each rank is given the job file the supervisor
wrote (`python -m harness _rank <run dir>/config.json`). This process stays as the supervisor:
it outlives its ranks, closes the run record if rank 0 died before it could, and prints the
results line last.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness import faults
from harness.dist import host_name
from harness.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED
from harness.results import DamagedRun, RecordError, RunRecord, close_if_unfinished, read_manifest

RANK_COMMAND = "_rank"


def _exit_code(exc: BaseException) -> int:
    failures = getattr(exc, "failures", {}) or {}
    codes = [getattr(f, "exitcode", EXIT_FAILED) for f in failures.values()]
    interrupted = any(c in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM) for c in codes)
    if interrupted:
        return EXIT_INTERRUPTED
    positive = [c for c in codes if c and c > 0]
    return max(positive) if positive else EXIT_FAILED


_torn_down: set[int] = set()
"""Pids of ranks still running when the supervisor began stopping the job: whatever ended them
was the launcher, not their own failure."""


def _honour_grace(grace_s: int) -> None:
    """torch's elastic agent closes a failed worker group with a fixed 30 s between SIGTERM and
    SIGKILL (SubprocessContext._poll and LocalElasticAgent._stop_workers call close() with its
    default): a rank stopped by SIGSTOP, or stuck in the kernel, would keep the job alive 30 s
    after the hang is found. Every close in the supervisor waits at most launch.grace_s."""
    from torch.distributed.elastic.multiprocessing.api import PContext

    original = getattr(PContext.close, "__wrapped__", PContext.close)

    @functools.wraps(original)
    def close(self: PContext, death_sig: signal.Signals | None = None, timeout: int = 30) -> None:
        handlers = getattr(self, "subprocess_handlers", {}).values()
        _torn_down.update(h.proc.pid for h in handlers if h.proc.poll() is None)
        for pid in _stopped(self):  # a stopped rank cannot act on SIGTERM: waiting for it is waste
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        original(self, death_sig, min(timeout, grace_s))

    PContext.close = close  # type: ignore[method-assign]


def _stopped(context: object) -> list[int]:
    """The pids of a process context's ranks that are stopped (SIGSTOP, a debugger)."""
    pids = []
    for handler in getattr(context, "subprocess_handlers", {}).values():
        try:
            state = Path(f"/proc/{handler.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("T", "t"):
            pids.append(handler.proc.pid)
    return pids


@dataclass(frozen=True)
class Ended:
    """How the ranks of a local launch ended, as their supervisor saw it."""

    code: int
    """The job's exit code."""
    status: str
    """ok | failed | interrupted."""
    error: str | None
    """Who failed, when a rank did."""


def launch_local(nproc: int, job_file: Path, run_dir: Path, grace_s: int = 5) -> Ended:
    """Run `python -m harness _rank <job_file>` as `nproc` ranks on this host. A failing job
    ends within the process-group timeout plus grace_s. A record rank 0 left `running` is
    closed here; one it never wrote is the caller's to write (it knows the job)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException  # heavy: only when ranks start
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _honour_grace(grace_s)
    # The agent logs every step, each SIGTERM it sends and each rank's exit code; the run's record
    # and its one error line say all of that (who failed first), so only its critical lines show.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # Same default as torchrun: one OpenMP thread per rank unless the user chose; the rank sets
    # its share of the cores itself (harness.dist.init).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        shutdown_timeout=grace_s,
    )
    code, status, error = EXIT_OK, "ok", None
    seen: list[faults.Failure] = []
    try:
        elastic_launch(config, sys.executable)("-m", "harness", RANK_COMMAND, str(job_file))
    except (SignalException, KeyboardInterrupt) as exc:
        code, status, error = EXIT_INTERRUPTED, "interrupted", f"interrupted: {exc}"
    except Exception as exc:  # ChildFailedError: a rank exited non-zero or was killed
        code = _exit_code(exc)
        status = "interrupted" if code == EXIT_INTERRUPTED else "failed"
        host = host_name()
        exits = {rank: (f.exitcode, f.timestamp, f.pid in _torn_down)
                 for rank, f in (getattr(exc, "failures", {}) or {}).items()}  # fmt: skip
        seen = faults.from_exits(host, exits)
        error = faults.describe(faults.rank_order(seen)) or f"{type(exc).__name__}"
    try:
        unfinished = "a rank ended before rank 0 finished its record"
        if close_if_unfinished(run_dir, "failed" if status == "ok" else status, error or unfinished,
                               exit_code=code or EXIT_FAILED):  # fmt: skip
            code, status = code or EXIT_FAILED, "failed" if status == "ok" else status
        if seen:
            with contextlib.suppress(RecordError):  # the record says failed already; this only names who
                _attribute(run_dir, seen)
    except RecordError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        code = code or EXIT_FAILED
    try:
        manifest = read_manifest(run_dir)
    except DamagedRun:
        manifest = {}
    # The agent reports a checkpointed stop (SIGUSR1/SIGTERM) as a signal; rank 0's record says.
    if manifest.get("reason") == "preempted":
        return Ended(EXIT_PREEMPTED, "interrupted", manifest.get("error"))
    return Ended(code, status, error)


def _attribute(run_dir: Path, seen: list[faults.Failure]) -> None:
    """Name who failed first in a finished record: what the supervisor saw of its ranks (a
    signal that killed one) merged with what rank 0 recorded (errors, ranks that stopped
    answering)."""
    try:
        record = RunRecord.load(run_dir)
    except (OSError, ValueError):
        return
    recorded = [faults.Failure(**f) for f in record.manifest.get("failures") or []]
    if not recorded and not any(f.signal and not f.teardown for f in seen):
        return  # rank 0 ended the run itself (a failed check): its error says why, not the exit code
    merged = faults.merge(recorded, seen)
    if merged and [f.to_dict() for f in merged] != record.manifest.get("failures"):
        record.amend(failures=[f.to_dict() for f in merged], error=faults.describe(merged))
