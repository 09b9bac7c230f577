"""Who failed, and how fast: a rank killed by a signal, a rank that stops (SIGSTOP), and a
supervisor killed with its ranks running. Each run is the all_reduce sweep of the issue, with real
processes and real signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from harness.dist import host_name
from tests.conftest import harness_env

pytestmark = pytest.mark.integration

TIMEOUT_S = 10
GRACE_S = 5


def start(results_dir: Path) -> subprocess.Popen[str]:
    cmd = ["harness", "bench", "all_reduce", "launch.nproc=2", "bench.iters=5000", "bench.max_bytes=16M",
           f"launch.timeout_s={TIMEOUT_S}", f"launch.grace_s={GRACE_S}", "telemetry.enabled=false",
           f"results.dir={results_dir}"]  # fmt: skip
    return subprocess.Popen(cmd, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def ranks_once_rows(proc: subprocess.Popen[str], results_dir: Path) -> dict[int, psutil.Process]:
    """The supervisor's rank processes, once the run has written a row (it is mid-sweep)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = list(results_dir.glob("*/rows.jsonl"))
        if rows and rows[0].read_text().strip():
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    else:
        pytest.fail("the run never wrote a row")
    ranks = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        env = child.environ()
        if "_rank" in child.cmdline() and "RANK" in env:
            ranks[int(env["RANK"])] = child
    assert sorted(ranks) == [0, 1], ranks
    return ranks


def manifest(results_dir: Path) -> dict:
    (path,) = results_dir.glob("*/manifest.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("victim", [1, 0])
def test_a_rank_killed_by_sigkill_is_named_first(results_dir: Path, victim: int) -> None:
    proc = start(results_dir)
    ranks = ranks_once_rows(proc, results_dir)
    os.kill(ranks[victim].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=TIMEOUT_S + GRACE_S + 30)
    assert proc.returncode == 1, out + err
    m = manifest(results_dir)
    assert m["status"] == "failed"
    assert m["error"].startswith(f"rank {victim} on {host_name()}: killed by SIGKILL at "), m["error"]
    first, *rest = m["failures"]
    assert (first["rank"], first["signal"], first["role"], first["host"]) == (victim, "SIGKILL", "first", host_name())
    assert all(f["role"] == "consequence" and f["rank"] != victim for f in rest)
    assert len((results_dir / m["run_id"] / "rows.jsonl").read_text().splitlines()) >= 1  # rows kept


def test_a_stopped_rank_is_named_and_the_job_ends_within_timeout_plus_grace(results_dir: Path) -> None:
    proc = start(results_dir)
    ranks = ranks_once_rows(proc, results_dir)
    stopped = time.monotonic()
    os.kill(ranks[1].pid, signal.SIGSTOP)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S + GRACE_S + 30)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            ranks[1].kill()
    took = time.monotonic() - stopped
    assert proc.returncode == 1, out + err
    assert took <= TIMEOUT_S + GRACE_S, f"the hang cost {took:.1f} s"
    m = manifest(results_dir)
    assert m["error"].startswith(f"rank 1 on {host_name()}: stopped answering (last heartbeat "), m["error"]
    assert m["failures"][0]["rank"] == 1 and m["failures"][1]["rank"] == 0
    # The flight recorder names the collective rank 0 waited in, and its dump is in the run.
    recorder = m["flight_recorder"]
    assert recorder["hung"].startswith("gloo:all_reduce #"), recorder
    assert "rank-0.json" in recorder["files"]
    dump = json.loads((results_dir / m["run_id"] / recorder["dir"] / "rank-0.json").read_text())
    assert dump["entries"][-1]["profiling_name"] == "gloo:all_reduce"


def test_ranks_end_with_their_supervisor_and_the_record_is_closed(results_dir: Path) -> None:
    proc = start(results_dir)
    ranks = ranks_once_rows(proc, results_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    _gone, alive = psutil.wait_procs(list(ranks.values()), timeout=GRACE_S + 5)
    assert not alive, f"ranks outlived their supervisor: {alive}"
    m = manifest(results_dir)
    assert m["status"] == "interrupted", m
    assert "the harness supervisor died" in m["error"]
    assert len((results_dir / m["run_id"] / "rows.jsonl").read_text().splitlines()) >= 1  # rows kept
