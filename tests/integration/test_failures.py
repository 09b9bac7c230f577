"""A run that goes wrong is recorded as such: wrong results, an exception on any rank, Ctrl-C,
bad input. And a sweep gives one record per job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.dist import host_name
from tests.conftest import harness_env, need, run_cmd

pytestmark = pytest.mark.integration

AR = ["harness", "bench", "all_reduce", "bench=quick", "launch.nproc=2"]


def only_run_dir(results_dir: Path) -> Path:
    runs = [p for p in results_dir.iterdir() if p.is_dir() and p.name != "sweeps"]
    assert len(runs) == 1, runs
    return runs[0]


def test_wrong_result_fails_the_run(results_dir: Path) -> None:
    run = run_cmd([*AR, "debug.fault=wrong_result", "debug.fault_rank=1", f"results.dir={results_dir}"])
    assert run.proc.returncode == 1, run.output
    run.validate()
    assert run.manifest["status"] == "failed"
    assert "correctness check failed in 1 of 8 rows" in run.manifest["error"]
    first, *rest = run.rows
    assert first["wrong"] == 1 and first["passed"] is False
    assert all(r["wrong"] == 0 for r in rest)
    assert run.manifest["failed_rows"] == 1


def test_gemm_wrong_result_is_caught_by_the_fp64_check(results_dir: Path) -> None:
    run = run_cmd(["harness", "bench", "gemm", "bench=quick", "launch.nproc=2", "debug.fault=wrong_result",
                   f"results.dir={results_dir}"])  # fmt: skip
    assert run.proc.returncode == 1, run.output
    bad = [r for r in run.rows if not r["passed"]]
    assert len(bad) == 1 and bad[0]["rank"] == 0 and bad[0]["rel_error"] > bad[0]["tolerance"]


def test_exception_on_another_rank_is_recorded_by_rank_0(results_dir: Path) -> None:
    run = run_cmd([*AR, "debug.fault=raise", "debug.fault_rank=1", f"results.dir={results_dir}"])
    assert run.proc.returncode == 1, run.output
    run.validate()
    assert run.manifest["status"] == "failed"
    assert run.manifest["error"].startswith(
        f"rank 1 on {host_name()}: RuntimeError: injected fault (debug.fault=raise)"
    )
    assert run.manifest["failures"][0]["rank"] == 1 and run.manifest["failures"][1]["role"] == "consequence"
    assert run.manifest["finished_at"] is not None


def test_torchrun_exception_on_rank_1(results_dir: Path) -> None:
    need("torchrun", "torch's launcher")
    cmd = ["torchrun", "--nproc-per-node", "2", "-m", *AR[:4], "debug.fault=raise", "debug.fault_rank=1",
           f"results.dir={results_dir}"]  # fmt: skip
    run = run_cmd(cmd)
    assert run.proc.returncode != 0
    manifest = json.loads((only_run_dir(results_dir) / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "rank 1" in manifest["error"]


def test_ctrl_c_records_an_interrupted_run(results_dir: Path) -> None:
    # Rank 1 hangs, as a stuck GPU would; the user presses Ctrl-C (SIGINT to the process group).
    proc = subprocess.Popen(
        [*AR, "debug.fault=hang", "debug.fault_rank=1", f"results.dir={results_dir}"],
        env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    manifest_path = None
    while time.monotonic() < deadline and manifest_path is None:
        found = list(results_dir.glob("*/manifest.json"))
        manifest_path = found[0] if found else None
        time.sleep(0.2)
    assert manifest_path is not None, "the run never started"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"{proc.returncode}\n{stdout}\n{stderr}"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "interrupted", manifest
    assert "SIGINT" in manifest["error"] or "interrupt" in manifest["error"]
    assert stdout.strip().splitlines()[-1] == f"results: {manifest_path.parent}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "nosuch"], "unknown benchmark 'nosuch'; choices: gemm, memory, host_link, hpl, kernels, node_pairs"),
        (["bench", "all_reduce", "bench.bogus=1"], "unknown config key 'bench.bogus'"),
        (["bench", "all_reduce", "bench.max_bytes=-1"], "bench.max_bytes"),
        (["bench", "gemm", "bench.dtype=tf32"], "'tf32' is not available for gemm on cpu"),
        (["bench", "all_reduce", "device=cuda"], "device=cuda but no CUDA GPU is visible"),
        (["bench", "all_reduce", "bench.dtype=float32,float99", "-m"], "unknown dtype 'float99'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_run(results_dir: Path, args: list[str], message: str) -> None:
    run = run_cmd(["harness", *args, f"results.dir={results_dir}"], timeout=60)
    assert run.proc.returncode == 2, run.output
    lines = run.proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.output
    assert list(results_dir.iterdir()) == []


def test_multirun_sweep_records_one_run_per_job(results_dir: Path) -> None:
    run = run_cmd([*AR, "bench.dtype=float32,bfloat16", "bench.max_bytes=1K", "-m", f"results.dir={results_dir}"])
    assert run.proc.returncode == 0, run.output
    runs = sorted(p for p in results_dir.iterdir() if (p / "manifest.json").exists())
    assert len(runs) == 2
    dtypes = set()
    for path in runs:
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["status"] == "ok"
        rows = [json.loads(line) for line in (path / "rows.jsonl").read_text().splitlines()]
        dtypes |= {r["dtype"] for r in rows}
        assert all(r["wrong"] == 0 for r in rows)
    assert dtypes == {"float32", "bfloat16"}


def test_rerun_repeats_a_recorded_run(results_dir: Path) -> None:
    first = run_cmd(["harness", "bench", "gemm", "bench=quick", "bench.dtype=float32", "launch.nproc=1",
                     f"results.dir={results_dir}"])  # fmt: skip
    assert first.proc.returncode == 0, first.output
    again = run_cmd(["harness", "rerun", str(first.run_dir), "bench.iters=2"])
    assert again.proc.returncode == 0, again.output
    assert again.run_dir != first.run_dir and again.run_dir.parent == first.run_dir.parent
    before, after = first.manifest["config"], again.manifest["config"]
    assert after["bench"]["iters"] == 2 and before["bench"]["iters"] == 5
    after["bench"]["iters"] = before["bench"]["iters"]
    assert after == before  # everything else as recorded
    assert [(r["shape"], r["dtype"]) for r in again.rows] == [(r["shape"], r["dtype"]) for r in first.rows]
