"""Starting N local ranks when the harness is not already under a launcher.

The ranks are started by torch's elastic launcher (what torchrun uses), so a local run goes
through exactly the code path of a torchrun job. This process stays as the supervisor: it
outlives its ranks, closes the run record if rank 0 died before it could, and prints the
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
from harness.results import close_if_unfinished


def _exit_code(exc: BaseException) -> int:
    failures = getattr(exc, "failures", {}) or {}
    codes = [getattr(f, "exitcode", EXIT_FAILED) for f in failures.values()]
    interrupted = any(c in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM) for c in codes)
    if interrupted:
        return EXIT_INTERRUPTED
    positive = [c for c in codes if c and c > 0]
    return max(positive) if positive else EXIT_FAILED


def launch_local(nproc: int, worker_args: list[str], run_dir: Path) -> int:
    """Run `python -m harness <worker_args>` as `nproc` ranks on this host; return the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent logs every step at INFO; only its warnings and errors matter to a user.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    os.environ["HARNESS_LAUNCHER"] = "local"
    os.environ["HARNESS_RUN_ID"] = run_dir.name
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
        elastic_launch(config, sys.executable)("-m", "harness", *worker_args)
    except (SignalException, KeyboardInterrupt) as exc:
        code, status, error = EXIT_INTERRUPTED, "interrupted", f"interrupted: {exc}"
    except Exception as exc:  # ChildFailedError: a rank exited non-zero or was killed
        code = _exit_code(exc)
        status = "interrupted" if code == EXIT_INTERRUPTED else "failed"
        error = f"rank failure: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    finally:
        os.environ.pop("HARNESS_LAUNCHER", None)
        os.environ.pop("HARNESS_RUN_ID", None)
    if close_if_unfinished(run_dir, status, error) and code == EXIT_OK:
        code = EXIT_FAILED
    return _preempted(run_dir) or code


def _preempted(run_dir: Path) -> int:
    """EXIT_PREEMPTED when rank 0 recorded a checkpointed stop (the agent reports it as a signal)."""
    import json

    manifest = run_dir / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("status") == "interrupted" and str(data.get("error") or "").startswith("preempted"):
            return EXIT_PREEMPTED
    return 0
