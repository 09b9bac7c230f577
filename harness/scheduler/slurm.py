"""`harness slurm submit|status|collect`: the Python side of slurm/*.sbatch.

A submission makes the run directory first (job.sbatch, submission.json), then submits with
sbatch. The job's own command line carries the run id (`results.run_id=...`), so rank 0 of the
job writes its record into that same directory: a job id, a run directory and a record are one
thing. A sweep becomes one job array whose elements carry run ids of their own, listed in
submission.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import display
from harness.config.compose import quote
from harness.config.job import Job
from harness.config.schema import SlurmConfig
from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, ConfigError
from harness.results import DamagedRun, read_manifest, read_run, write_sweep_summary
from harness.results.atomic import write_atomic
from harness.scheduler.render import SlurmOptions, render

SUBMISSION = "submission.json"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}  # fmt: skip


@dataclass(frozen=True)
class Element:
    """One job (or one element of a job array) to submit: its job, and the arguments the batch
    script passes to `harness TASK`."""

    job: Job
    args: tuple[str, ...]
    """Overrides as the user gave them (what `collect` shows)."""


def options(s: SlurmConfig, *, cluster_gpus_per_node: int | None = None) -> SlurmOptions:
    """The #SBATCH options of slurm.*; slurm.gpus_per_node null takes `cluster_gpus_per_node`."""
    gpus = s.gpus_per_node if s.gpus_per_node is not None else cluster_gpus_per_node
    return SlurmOptions(s.job_name, s.nodes, s.ntasks_per_node, gpus, s.partition, s.account, s.qos,
                        s.time, s.exclude, tuple(s.extra))  # fmt: skip


def gpu_note(opts: SlurmOptions, device_type: str) -> str | None:
    """What a user submitting from a host without a GPU (a login node) must know: the job asks
    Slurm for no GPU unless slurm.gpus_per_node says so."""
    if opts.gpus_per_node is None and device_type != "cuda":
        return ("this host has no GPU, so the job asks Slurm for none (a CPU job); for GPU nodes add "
                "slurm.gpus_per_node=N (e.g. 8)")  # fmt: skip
    return None


def job_argv(element: Element) -> list[str]:
    """What the batch script hands `harness TASK`: the user's overrides, then the run directory
    this submission made (later overrides win)."""
    job = element.job
    results = str(Path(job.config.results.dir).resolve())
    pinned = [f"results.dir={quote(results)}", f"results.run_id={job.run_id}"]
    if job.sweep_id:
        pinned.append(f"results.sweep_id={job.sweep_id}")
    return [*element.args, *pinned]


def submit(elements: list[Element], parent: Job) -> int:
    """Render, save, submit; with slurm.wait, follow the job to its end. More than one element:
    one job array (slurm.array=true), each element writing its own run directory."""
    cfg = parent.config
    # GPUs per node: cluster.gpus_per_node for a job on GPUs; a CPU job asks for none.
    opts = options(cfg.slurm, cluster_gpus_per_node=cfg.cluster.gpus_per_node if parent.device_type == "cuda" else None)
    note = gpu_note(opts, parent.device_type)
    if note:
        display.note(note)
    array = len(elements) > 1
    if array:
        opts = SlurmOptions(**{**opts.__dict__, "extra": (*opts.extra, f"--array=0-{len(elements) - 1}")})
    script = render(parent.task, opts)
    run_dir = parent.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    script_path = run_dir / "job.sbatch"
    write_atomic(script_path, script)
    env = {**os.environ, "HARNESS_VENV": sys.prefix, "HARNESS_REPO": str(Path(__file__).resolve().parents[2])}
    if array:
        for index, element in enumerate(elements):
            # NUL-separated: the script reads them back with mapfile, no shell parsing of any value
            write_atomic(run_dir / f"args-{index}", "".join(f"{arg}\0" for arg in job_argv(element)))
        env["HARNESS_ARRAY_DIR"] = str(run_dir)
        job_args: list[str] = []
    else:
        job_args = job_argv(elements[0])
    cmd = ["sbatch", "--parsable", "--export=ALL", f"--output={run_dir}/slurm-%j.out", str(script_path), *job_args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["sbatch failed"])[-1]
        write_atomic(run_dir / SUBMISSION, json.dumps({"job_id": None, "error": reason, "argv": job_args}, indent=2))
        display.error_line(f"sbatch refused {script_path}: {reason}")
        return EXIT_BAD_INPUT
    job_id = done.stdout.strip().split(";")[0]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"job_id": job_id, "task": parent.task, "argv": job_args, "script": str(script_path),
              "elements": [list(e.args) for e in elements] if array else [],
              "runs": [e.job.run_id for e in elements] if array else [parent.run_id],
              "sweep_id": parent.sweep_id, "submitted_at": stamp}  # fmt: skip
    write_atomic(run_dir / SUBMISSION, json.dumps(record, indent=2))
    display.console.print(f"submitted job {job_id}: {script_path}")
    if not cfg.slurm.wait:
        display.console.print(f"results: {run_dir}")
        return EXIT_OK
    return follow(job_id, run_dir, cfg.slurm.poll_s)


def job_state(job_id: str) -> str:
    """Slurm's state of the job (PENDING, RUNNING, COMPLETED, FAILED, ...), or UNKNOWN. For an
    array: RUNNING while any element is not final, else the worst final state. A job the
    controller has forgotten is looked up in the accounting database (sacct)."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    states = [f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")]
    if not states:
        states = _sacct_states(job_id)
    if not states:
        return "UNKNOWN"
    if any(state not in FINAL for state in states):
        return next(state for state in states if state not in FINAL)
    return next((state for state in states if state != "COMPLETED"), "COMPLETED")


def _sacct_states(job_id: str) -> list[str]:
    """The job's states from sacct (the controller keeps finished jobs only for MinJobAge)."""
    try:
        done = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    # "CANCELLED by 0" -> CANCELLED
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


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


def _submission(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUBMISSION
    return json.loads(path.read_text()) if path.is_file() else {}


def find_run(job_or_dir: str, results_dir: str) -> Path:
    """The run directory of a job id (searched under results_dir), or the directory itself."""
    path = Path(job_or_dir)
    if (path / SUBMISSION).is_file() or (path / "manifest.json").is_file():
        return path
    for submission in sorted(Path(results_dir).glob(f"*/{SUBMISSION}")):
        if json.loads(submission.read_text()).get("job_id") == job_or_dir:
            return submission.parent
    raise ConfigError(f"no run of job {job_or_dir!r} under {results_dir!r}; give the run directory instead")


def _manifest(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    try:
        return read_manifest(run_dir)
    except DamagedRun:
        return {}


def show_array(run_dir: Path, job_id: str, state: str) -> int:
    """The sweep summary: every element's arguments, status and headline figure; kept as
    sweeps/<sweep id>/summary.json beside the runs, as a local sweep keeps it."""
    submission = _submission(run_dir)
    display.console.print(f"array job {job_id}: {state}")
    failed = 0
    entries = []
    for index, run_id in enumerate(submission.get("runs", [])):
        element_dir = run_dir.parent / run_id
        run = read_run(element_dir)
        status = "missing" if run.status in ("unknown", "pending") else run.status
        failed += status != "ok"
        args = " ".join(submission["elements"][index])
        where = element_dir if status != "missing" else ""
        display.console.print(f"  [{index}] {status:<11} {args}  {run.headline or '-'}  {where}", markup=False)
        headline = str(run.headline) if run.headline else None
        entries.append({"element": index, "run_id": run_id, "status": status, "exit_code": run.exit_code,
                        "headline": headline, "args": submission["elements"][index]})  # fmt: skip
    if submission.get("sweep_id"):
        summary = write_sweep_summary(run_dir.parent, submission["sweep_id"], entries)
        display.console.print(f"sweep summary: {summary}")
    display.console.print(f"results: {run_dir}")
    return EXIT_OK if not failed else EXIT_FAILED


def show(run_dir: Path, state: str) -> int:
    """The record's status, summary and, for a failed job, where and why (the log's tail)."""
    submission = _submission(run_dir)
    if submission.get("elements"):
        return show_array(run_dir, submission["job_id"], state)
    manifest = _manifest(run_dir)
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
    """`harness slurm status JOB|RUN_DIR`: Slurm's state of the job (scontrol, else sacct) and the run's status."""
    run_dir = find_run(job_or_dir, results_dir)
    submission = _submission(run_dir)
    state = job_state(submission["job_id"]) if submission.get("job_id") else "UNKNOWN"
    run_status = _manifest(run_dir).get("status", "not started")
    display.console.print(f"job {submission.get('job_id')}: {state}; run {run_status}")
    display.console.print(f"results: {run_dir}")
    return EXIT_OK


def collect(job_or_dir: str, results_dir: str) -> int:
    """`harness slurm collect JOB|RUN_DIR`: the run's summary, and for a failed job its error and log tail."""
    run_dir = find_run(job_or_dir, results_dir)
    submission = _submission(run_dir)
    state = job_state(submission["job_id"]) if submission.get("job_id") else "UNKNOWN"
    return show(run_dir, state)
