"""Starting N local ranks when the harness is not already under a launcher.

The ranks are started by torch's elastic launcher (what torchrun uses), so a local run goes
through exactly the code path of a torchrun job. Each rank is given the job file the supervisor
wrote (`python -m harness _rank <run dir>/config.json`). This process stays as the supervisor:
it outlives its ranks, closes the run record if rank 0 died before it could, and prints the
results line last.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from pathlib import Path

from harness.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED
from harness.results import DamagedRun, close_if_unfinished, read_manifest

RANK_COMMAND = "_rank"


def _exit_code(exc: BaseException) -> int:
    failures = getattr(exc, "failures", {}) or {}
    codes = [getattr(f, "exitcode", EXIT_FAILED) for f in failures.values()]
    interrupted = any(c in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM) for c in codes)
    if interrupted:
        return EXIT_INTERRUPTED
    positive = [c for c in codes if c and c > 0]
    return max(positive) if positive else EXIT_FAILED


def launch_local(nproc: int, job_file: Path, run_dir: Path) -> int:
    """Run `python -m harness _rank <job_file>` as `nproc` ranks on this host; return the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException  # heavy: only when ranks start
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent logs every step at INFO; only its warnings and errors matter to a user.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
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
    )
    code, status, error = EXIT_OK, "failed", "a rank ended before writing its record"
    try:
        elastic_launch(config, sys.executable)("-m", "harness", RANK_COMMAND, str(job_file))
    except (SignalException, KeyboardInterrupt) as exc:
        code, status, error = EXIT_INTERRUPTED, "interrupted", f"interrupted: {exc}"
    except Exception as exc:  # ChildFailedError: a rank exited non-zero or was killed
        code = _exit_code(exc)
        status = "interrupted" if code == EXIT_INTERRUPTED else "failed"
        error = f"rank failure: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    if close_if_unfinished(run_dir, status, error, exit_code=code or EXIT_FAILED) and code == EXIT_OK:
        code = EXIT_FAILED
    try:
        manifest = read_manifest(run_dir)
    except DamagedRun:
        manifest = {}
    # The agent reports a checkpointed stop (SIGUSR1/SIGTERM) as a signal; rank 0's record says.
    if manifest.get("reason") == "preempted":
        return EXIT_PREEMPTED
    return code
