"""Sovereignty: runs need no network beyond this host. `harness accept` and a short
`harness train` run inside a network namespace that has only loopback (`unshare -n`)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from harness.results import read_run
from tests.conftest import IN_CI, harness_env

pytestmark = pytest.mark.integration


def offline(commands: list[list[str]], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `commands` one after another in a new network namespace (lo brought up first: a new
    namespace starts with it down)."""
    script = " && ".join(["ip link set lo up", *(shlex.join(c) for c in commands)])
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], env=harness_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if proc.returncode != 0 and "unshare failed" in proc.stderr:
        message = f"no network namespace here: {proc.stderr.strip()}"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    return proc


def test_accept_and_train_run_with_only_loopback(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = offline([
        ["sh", "-c", "! ip route get 192.0.2.1 2>/dev/null"],  # no route off this host
        ["harness", "accept", "launch.nproc=2", "hardware=cpu", "accept.retries=0", "accept.comm_bytes=64K",
         "accept.gemm_shapes=[128x128x128]", f"results.dir={results}"],
        ["harness", "train", "train.steps=3", "train.global_batch=4", "train.micro_batch=2", "train.seq_len=16",
         "launch.nproc=2", f"results.dir={results}"],
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {run.task: run for run in (read_run(p) for p in results.iterdir() if p.is_dir())}
    assert runs["accept"].status == "ok" and runs["train"].status == "ok"
    assert runs["train"].rows >= 1
