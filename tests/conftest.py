"""Shared fixtures: running the real `harness` command under the real launchers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The kernel tests run the Triton kernels in Triton's CPU interpreter, which Triton reads when
# a kernel is defined: set it before anything imports `kernels` (the model does). Child
# processes started by the tests get a clean environment (harness_env) unless they ask.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from harness.results import validate_manifest, validate_row

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(tool: str, why: str) -> str:
    """The path of `tool`; under CI a missing tool fails the test, elsewhere it skips it."""
    path = shutil.which(tool, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        message = f"{tool} not found: {why}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Run:
    """A finished `harness` process and its run directory."""

    proc: subprocess.CompletedProcess
    run_dir: Path | None

    @property
    def manifest(self) -> dict:
        assert self.run_dir is not None, self.output
        return json.loads((self.run_dir / "manifest.json").read_text())

    @property
    def rows(self) -> list[dict]:
        assert self.run_dir is not None, self.output
        text = (self.run_dir / "rows.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    @property
    def output(self) -> str:
        return f"exit {self.proc.returncode}\nstdout:\n{self.proc.stdout}\nstderr:\n{self.proc.stderr}"

    def validate(self) -> None:
        """The record follows the versioned schemas."""
        validate_manifest(self.manifest)
        for row in self.rows:
            validate_row(row)


def harness_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # Keep launcher variables of an outer job (a test run inside srun, say) out of the child.
    for key in list(env):
        if key.startswith(("SLURM_STEP", "SLURM_PROCID", "OMPI_COMM_WORLD", "PMI_", "PMIX_")) or key in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
            "TORCHELASTIC_RUN_ID",
            "TRITON_INTERPRET",
        ):
            env.pop(key)
    env.update(extra)
    return env


def run_cmd(cmd: list[str], *, timeout: float = 180, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or harness_env(),
        cwd=cwd or ROOT,
        stdin=subprocess.DEVNULL,
    )
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    run_dir = None
    if lines and lines[-1].startswith("results: "):
        run_dir = Path(lines[-1].removeprefix("results: ").strip())
        if not run_dir.is_absolute():
            run_dir = (cwd or ROOT) / run_dir
    return Run(proc, run_dir)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """Environment for srun/sbatch against the local cluster of slurm/local/start.sh."""
    need("srun", "start the local cluster with slurm/local/start.sh (make test does)")
    conf = os.environ.get("SLURM_CONF") or f"{os.environ.get('HARNESS_SLURM_DIR', '/tmp/exaharness-slurm')}/slurm.conf"
    env = harness_env(SLURM_CONF=conf)
    probe = subprocess.run(["sinfo", "-h", "-o", "%D %t"], capture_output=True, text=True, env=env, timeout=30)
    if probe.returncode != 0 or not any(state in probe.stdout for state in ("idle", "mix", "alloc")):
        message = f"local Slurm not answering (SLURM_CONF={conf}): {probe.stderr.strip() or probe.stdout.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return env
