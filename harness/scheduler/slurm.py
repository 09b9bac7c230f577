"""`harness slurm submit|status|collect`: the Python side of slurm/*.sbatch.

A submission makes the run directory first (job.sbatch, submission.json), then submits with
sbatch; rank 0 of the job writes its record into that same directory (HARNESS_RUN_ID), so a job
id, a run directory and a record are one thing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import display
from harness.config.schema import RunConfig
from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, ConfigError
from harness.results import new_run_id
from harness.results.atomic import write_atomic
from harness.scheduler.render import SlurmOptions, render

SUBMISSION = "submission.json"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}  # fmt: skip


def options(cfg: RunConfig) -> SlurmOptions:
    s = cfg.slurm
    return SlurmOptions(s.job_name, s.nodes, s.ntasks_per_node, s.gpus_per_node, s.partition, s.account, s.qos,
                        s.time, s.exclude, tuple(s.extra))  # fmt: skip


def submit(cfg: RunConfig, job_args: list[str], elements: list[list[str]] | None = None) -> int:
    """Render, save, submit; with slurm.wait, follow the job to its end. `elements`: the argv of
    each element of a job array (slurm.array=true)."""
    opts = options(cfg)
    if elements:
        opts = SlurmOptions(**{**opts.__dict__, "extra": (*opts.extra, f"--array=0-{len(elements) - 1}")})
    script = render(cfg.task, opts)
    results = Path(cfg.results.dir).resolve()
    run_id = new_run_id(cfg.task)
    run_dir = results / run_id
    run_dir.mkdir(parents=True)
    script_path = run_dir / "job.sbatch"
    write_atomic(script_path, script)
    # Through the environment (sbatch --export=ALL), not --export=K=V: a comma in a path would split it.
    env = {**os.environ, "HARNESS_RUN_ID": run_id, "HARNESS_RESULTS": str(results), "HARNESS_VENV": sys.prefix,
           "HARNESS_REPO": str(Path(__file__).resolve().parents[2])}  # fmt: skip
    for index, argv in enumerate(elements or []):
        # NUL-separated: the script reads them back with mapfile, no shell parsing of any value
        write_atomic(run_dir / f"args-{index}", "".join(f"{arg}\0" for arg in argv))
    if elements:
        env["HARNESS_ARRAY_DIR"] = str(run_dir)
    cmd = ["sbatch", "--parsable", "--export=ALL", f"--output={run_dir}/slurm-%j.out", str(script_path), *job_args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["sbatch failed"])[-1]
        write_atomic(run_dir / SUBMISSION, json.dumps({"job_id": None, "error": reason, "argv": job_args}, indent=2))
        display.error_line(f"sbatch refused {script_path}: {reason}")
        return EXIT_BAD_INPUT
    job_id = done.stdout.strip().split(";")[0]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"job_id": job_id, "task": cfg.task, "argv": job_args, "script": str(script_path),
              "elements": elements or [], "submitted_at": stamp}  # fmt: skip
    write_atomic(run_dir / SUBMISSION, json.dumps(record, indent=2))
    display.console.print(f"submitted job {job_id}: {script_path}")
    if not cfg.slurm.wait:
        display.console.print(f"results: {run_dir}")
        return EXIT_OK
    return follow(job_id, run_dir, cfg.slurm.poll_s)


def job_state(job_id: str) -> str:
    """Slurm's state of the job (PENDING, RUNNING, COMPLETED, FAILED, ...), or UNKNOWN. For an
    array: RUNNING while any element is not final, else the worst final state."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    states = [f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")]
    if not states:
        return "UNKNOWN"
    if any(state not in FINAL for state in states):
        return next(state for state in states if state not in FINAL)
    return next((state for state in states if state != "COMPLETED"), "COMPLETED")


def follow(job_id: str, run_dir: Path, poll_s: float) -> int:
    """Poll until the job ends (a line whenever its state changes), then show its record."""
    started, last = time.monotonic(), ""
    while True:
        state = job_state(job_id)
        if state != last:
            display.console.print(f"job {job_id}: {state} ({time.monotonic() - started:.0f} s)")
            last = state
        if state in FINAL or state == "UNKNOWN":
            break
        time.sleep(poll_s)
    return show(run_dir, state)


def find_run(job_or_dir: str, results_dir: str) -> Path:
    """The run directory of a job id (searched under results_dir), or the directory itself."""
    path = Path(job_or_dir)
    if (path / SUBMISSION).is_file() or (path / "manifest.json").is_file():
        return path
    for submission in sorted(Path(results_dir).glob(f"*/{SUBMISSION}")):
        if json.loads(submission.read_text()).get("job_id") == job_or_dir:
            return submission.parent
    raise ConfigError(f"no run of job {job_or_dir!r} under {results_dir!r}; give the run directory instead")


def array_runs(run_dir: Path, job_id: str) -> list[tuple[int, Path | None]]:
    """(element, its run directory or None) for every element of an array job."""
    submission = json.loads((run_dir / SUBMISSION).read_text())
    found: dict[int, Path] = {}
    for manifest in run_dir.parent.glob("*/manifest.json"):
        env = json.loads(manifest.read_text()).get("env", {})
        if env.get("SLURM_ARRAY_JOB_ID") == job_id and env.get("SLURM_ARRAY_TASK_ID", "").isdigit():
            found[int(env["SLURM_ARRAY_TASK_ID"])] = manifest.parent
    return [(i, found.get(i)) for i in range(len(submission["elements"]))]


def show_array(run_dir: Path, job_id: str, state: str) -> int:
    """The sweep summary: every element's arguments, status and headline figure."""
    submission = json.loads((run_dir / SUBMISSION).read_text())
    display.console.print(f"array job {job_id}: {state}")
    failed = 0
    for index, element_dir in array_runs(run_dir, job_id):
        manifest = json.loads((element_dir / "manifest.json").read_text()) if element_dir else {}
        status = manifest.get("status", "missing")
        failed += status != "ok"
        headline = next(iter((manifest.get("summary") or {}).items()), None)
        figure = f"{headline[0]} {json.dumps(headline[1])[:120]}" if headline else "-"
        args = " ".join(submission["elements"][index])
        display.console.print(f"  [{index}] {status:<11} {args}  {figure}  {element_dir or ''}", markup=False)
    display.console.print(f"results: {run_dir}")
    return EXIT_OK if not failed else EXIT_FAILED


def show(run_dir: Path, state: str) -> int:
    """The record's status, summary and, for a failed job, where and why (the log's tail)."""
    submission_path = run_dir / SUBMISSION
    if submission_path.exists():
        submission = json.loads(submission_path.read_text())
        if submission.get("elements"):
            return show_array(run_dir, submission["job_id"], state)
    manifest_path = run_dir / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    status = manifest.get("status", "missing")
    display.console.print(f"slurm state {state}; run status {status}")
    for name, summary in (manifest.get("summary") or {}).items():
        display.console.print(f"{name}: {json.dumps(summary)[:300]}")
    if status != "ok":
        if manifest.get("error"):
            display.console.print(f"error: {manifest['error']}")
        logs = sorted(run_dir.glob("slurm-*.out"))
        if logs:
            tail = logs[-1].read_text(errors="replace").strip().splitlines()[-15:]
            display.console.print(f"last lines of {logs[-1]}:")
            for line in tail:
                display.console.print(f"  {line}", markup=False)
    display.console.print(f"results: {run_dir}")
    return EXIT_OK if status == "ok" else EXIT_FAILED


def status(job_or_dir: str, results_dir: str) -> int:
    run_dir = find_run(job_or_dir, results_dir)
    submission = json.loads((run_dir / SUBMISSION).read_text()) if (run_dir / SUBMISSION).exists() else {}
    state = job_state(submission["job_id"]) if submission.get("job_id") else "UNKNOWN"
    manifest = run_dir / "manifest.json"
    run_status = json.loads(manifest.read_text())["status"] if manifest.exists() else "not started"
    display.console.print(f"job {submission.get('job_id')}: {state}; run {run_status}")
    display.console.print(f"results: {run_dir}")
    return EXIT_OK


def collect(job_or_dir: str, results_dir: str) -> int:
    run_dir = find_run(job_or_dir, results_dir)
    submission = json.loads((run_dir / SUBMISSION).read_text()) if (run_dir / SUBMISSION).exists() else {}
    state = job_state(submission["job_id"]) if submission.get("job_id") else "UNKNOWN"
    return show(run_dir, state)
