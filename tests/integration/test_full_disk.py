"""A results directory on a disk that fills up: a small tmpfs with a given number of KB left.
However little is free, the run ends non-zero with one line naming ENOSPC, no traceback, no
manifest left `running`, and no empty folder printed as a result."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, harness_env

pytestmark = pytest.mark.integration

SIZE_KB = 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root, as on CI's machines)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_KB}k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        message = f"cannot mount a tmpfs: {made.stderr.strip()}"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(mount: Path, free_kb: int) -> None:
    """Leave free_kb KB free on the tmpfs."""
    with open(mount / "filler", "wb") as out:
        out.write(b"\0" * ((SIZE_KB - free_kb) * 1024))
    st = os.statvfs(mount)
    assert st.f_bavail * st.f_frsize // 1024 == free_kb


@pytest.mark.parametrize("free_kb", [40, 16, 4, 0])
def test_a_full_disk_fails_the_run_cleanly(small_disk: Path, free_kb: int) -> None:
    fill(small_disk, free_kb)
    results = small_disk / "results"
    cmd = ["harness", "bench", "all_reduce", "bench=quick", "launch.nproc=2", "telemetry.enabled=false",
           f"results.dir={results}"]  # fmt: skip
    proc = subprocess.run(cmd, env=harness_env(), capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    assert "No space left on device" in proc.stderr
    runs = [p for p in results.iterdir() if p.is_dir()] if results.exists() else []
    if not runs:  # not even the job file fitted: one line, and nothing left behind
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: cannot write ") and line.endswith("the run was not recorded"), line
        assert "results:" not in proc.stdout
        return
    (run,) = runs
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "No space left on device" in manifest["error"], manifest
    assert proc.stdout.strip().splitlines()[-1] == f"results: {run}"
    rows = (run / "rows.jsonl").read_text().splitlines()
    assert len(rows) == manifest["rows"]  # what was measured is kept, and the manifest counts it
