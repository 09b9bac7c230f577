"""The Slurm path on the real two-node local cluster (n1, n2): sbatch templates, harness slurm
submit/status/collect, multi-node ranks, hostile values, requeue and resume."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from harness.dist import expand_hostlist
from tests.conftest import ROOT, Run, run_cmd

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def submit(results_dir: Path | str, env: dict[str, str], *args: str, wait: bool = True) -> Run:
    """`harness slurm submit ARGS results.dir=...`, following the job when `wait`."""
    follow = ["slurm.wait=true", "slurm.poll_s=0.5"] if wait else []
    cmd = ["harness", "slurm", "submit", *args, *follow, f"results.dir={results_dir}"]
    return run_cmd(cmd, env=env, timeout=300)


def wait_job(job_id: str, env: dict[str, str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env).stdout
        state = next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "UNKNOWN")
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            return state
        time.sleep(0.5)
    return state


def check_four_ranks_on_two_nodes(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "ok", manifest.get("error")
    assert manifest["world_size"] == 4 and manifest["launcher"] == "slurm"
    assert manifest["hosts"] == ["n1", "n2"]  # Slurm node names, not the machine's host name
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    assert rows and all(r["wrong"] == 0 and r["world_size"] == 4 for r in rows)


def test_harness_slurm_submit_two_nodes_and_wait(results_dir: Path, slurm_env: dict[str, str]) -> None:
    run = submit(results_dir, slurm_env, "bench", "all_reduce", "bench=quick", "bench.max_bytes=1K", "slurm.nodes=2",
                 "slurm.ntasks_per_node=2", "slurm.job_name=ar-2x2")  # fmt: skip
    assert run.proc.returncode == 0, run.output
    assert "submitted job" in run.proc.stdout and "slurm state COMPLETED; run status ok" in run.proc.stdout
    check_four_ranks_on_two_nodes(run.run_dir)
    script = (run.run_dir / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --job-name=ar-2x2" in script
    job_id = json.loads((run.run_dir / "submission.json").read_text())["job_id"]
    for sub in ("status", "collect"):
        again = run_cmd(["harness", "slurm", sub, job_id, f"results.dir={results_dir}"], env=slurm_env)
        assert again.proc.returncode == 0 and again.run_dir == run.run_dir, again.output


def sbatch_2x2(results_dir: Path, slurm_env: dict[str, str], script: str, *args: str) -> tuple[str, Path]:
    """`sbatch -N 2 --ntasks-per-node 2 slurm/<script> ARGS` as an admin submits it; waits for the
    job to complete and returns its log and its one run directory."""
    env = {**slurm_env, "HARNESS_RESULTS": str(results_dir),
           "HARNESS_VENV": str(Path(slurm_env["PATH"].split(":")[0]).parent)}  # fmt: skip
    done = subprocess.run(
        ["sbatch", "--parsable", "-N", "2", "--ntasks-per-node", "2", f"--output={results_dir}/%j.out",
         str(ROOT / "slurm" / script), *args],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    log = results_dir / f"{job_id}.out"
    assert wait_job(job_id, env) == "COMPLETED", log.read_text()
    (run_dir,) = [p for p in results_dir.iterdir() if p.is_dir()]
    return log.read_text(), run_dir


def test_sbatch_template_directly(results_dir: Path, slurm_env: dict[str, str]) -> None:
    _, run_dir = sbatch_2x2(results_dir, slurm_env, "bench.sbatch", "all_reduce", "bench=quick", "bench.max_bytes=1K")
    check_four_ranks_on_two_nodes(run_dir)


def test_hostile_values_never_run(results_dir: Path, slurm_env: dict[str, str], tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    bad = submit(results_dir, slurm_env, "bench", "all_reduce", f"slurm.job_name=x;touch {canary}", wait=False)
    assert bad.proc.returncode == 2 and "slurm.job_name=" in bad.proc.stderr
    # A value that is valid for the harness but hostile to a shell goes to the job as argv, untouched.
    weird = tmp_path / f"r$(touch {canary})"
    run = submit(f"'{weird}'", slurm_env, "bench", "all_reduce", "bench=quick", "bench.max_bytes=64")
    assert run.proc.returncode == 0, run.output
    assert not canary.exists()
    assert run.run_dir.parent == weird  # the odd folder name was taken literally


def test_sbatch_rejection_is_one_line(results_dir: Path, slurm_env: dict[str, str]) -> None:
    run = submit(results_dir, slurm_env, "bench", "all_reduce", "slurm.partition=nosuch", wait=False)
    assert run.proc.returncode == 2, run.output
    (line,) = run.proc.stderr.strip().splitlines()
    assert line.startswith("error: sbatch refused ") and "job.sbatch" in line and "partition" in line.lower()
    too_many = submit(results_dir, slurm_env, "bench", "all_reduce", "slurm.nodes=9", wait=False)
    assert too_many.proc.returncode == 2 and "sbatch refused" in too_many.proc.stderr


def test_a_crashing_job_is_reported_failed(results_dir: Path, slurm_env: dict[str, str]) -> None:
    run = submit(
        results_dir,
        slurm_env,
        "bench",
        "all_reduce",
        "bench=quick",
        "slurm.ntasks_per_node=2",
        "debug.fault=raise",
        "debug.fault_rank=1",
    )
    assert run.proc.returncode == 1, run.output
    assert "run status failed" in run.proc.stdout
    assert re.search(r"error: rank 1 on n[12]: RuntimeError: injected fault", run.proc.stdout), run.output
    assert "last lines of" in run.proc.stdout  # the log's tail


def test_train_job_requeues_and_resumes_after_usr1(
    results_dir: Path, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    reference = run_cmd(
        [
            "harness",
            "train",
            "engine=ddp",
            "train.steps=40",
            "launch.nproc=2",
            "train.seq_len=32",
            f"results.dir={tmp_path}/ref",
            f"train.ckpt_dir={tmp_path}/ck-ref",
        ],
        timeout=300,
    )
    assert reference.proc.returncode == 0, reference.output
    run = submit(
        results_dir,
        slurm_env,
        "train",
        "engine=ddp",
        "train.steps=40",
        "train.seq_len=32",
        "slurm.ntasks_per_node=2",
        f"train.ckpt_dir={tmp_path}/ck",
        wait=False,
    )
    assert run.proc.returncode == 0, run.output
    job_id = json.loads((run.run_dir / "submission.json").read_text())["job_id"]
    rows = run.run_dir / "rows.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not rows.exists() or len(rows.read_text().splitlines()) < 5):
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=USR1", "-b", job_id], check=True, env=slurm_env)
    # The requeued job starts after Slurm's requeue delay (about two minutes), then resumes.
    deadline = time.monotonic() + 300
    finished = None
    while time.monotonic() < deadline and finished is None:  # the requeued job writes a second run
        for manifest in results_dir.glob("*/manifest.json"):
            data = json.loads(manifest.read_text())
            if data["status"] == "ok" and data.get("train", {}).get("resumed_from_step", 0) > 0:
                finished = manifest.parent
        time.sleep(0.5)
    assert finished is not None, (run.run_dir / f"slurm-{job_id}.out").read_text()[-3000:]
    first = json.loads((run.run_dir / "manifest.json").read_text())
    assert first["status"] == "interrupted" and first["error"].startswith("preempted")

    def losses(path: Path) -> list[float]:
        return [
            json.loads(line)["loss"]
            for line in (path / "rows.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"
        ]

    assert losses(run.run_dir) + losses(finished) == losses(reference.run_dir)


def test_status_of_a_forgotten_job_comes_from_accounting(results_dir: Path, slurm_env: dict[str, str]) -> None:
    """slurmctld forgets a finished job after MinJobAge (30 s on the local cluster); `harness slurm
    status` then asks sacct (slurmdbd) instead of answering UNKNOWN."""
    run = submit(results_dir, slurm_env, "bench", "all_reduce", "bench=quick", "bench.max_bytes=64", wait=False)
    assert run.proc.returncode == 0, run.output
    job_id = json.loads((run.run_dir / "submission.json").read_text())["job_id"]
    assert wait_job(job_id, slurm_env) == "COMPLETED"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        known = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=slurm_env)
        if known.returncode != 0:  # "Invalid job id specified"
            break
        time.sleep(2)
    assert known.returncode != 0, "slurmctld still knows the job"
    status = run_cmd(["harness", "slurm", "status", job_id, f"results.dir={results_dir}"], env=slurm_env)
    assert status.proc.returncode == 0 and f"job {job_id}: COMPLETED; run ok" in status.proc.stdout, status.output


def test_hostlists_agree_with_scontrol(slurm_env: dict[str, str]) -> None:
    for hostlist in ("n[1-3,7]", "gpu-a[01-02],gpu-b05"):
        out = subprocess.run(
            ["scontrol", "show", "hostnames", hostlist], capture_output=True, text=True, env=slurm_env, check=True
        ).stdout.split()
        assert expand_hostlist(hostlist) == out


def test_a_sweep_as_one_job_array(results_dir: Path, slurm_env: dict[str, str]) -> None:
    run = submit(
        results_dir,
        slurm_env,
        "bench",
        "all_reduce",
        "bench=quick",
        "bench.max_bytes=64",
        "bench.dtype=float32,bfloat16,int32",
        "slurm.array=true",
        "slurm.ntasks_per_node=2",
    )
    assert run.proc.returncode == 0, run.output
    submission = json.loads((run.run_dir / "submission.json").read_text())
    assert [e[-1] for e in submission["elements"]] == [
        "bench.dtype=float32",
        "bench.dtype=bfloat16",
        "bench.dtype=int32",
    ]
    assert "#SBATCH --array=0-2" in (run.run_dir / "job.sbatch").read_text()
    for index, dtype in enumerate(("float32", "bfloat16", "int32")):
        line = next(x for x in run.proc.stdout.splitlines() if x.strip().startswith(f"[{index}]"))
        assert " ok " in line and f"bench.dtype={dtype}" in line and "all_reduce" in line
    runs = [p for p in results_dir.iterdir() if (p / "manifest.json").exists()]
    dtypes = set()
    for path in runs:
        dtypes |= {json.loads(x)["dtype"] for x in (path / "rows.jsonl").read_text().splitlines()}
    assert len(runs) == 3 and dtypes == {"float32", "bfloat16", "int32"}  # one run directory per element
    summary = json.loads((results_dir / "sweeps" / submission["sweep_id"] / "summary.json").read_text())
    assert [(e["element"], e["status"]) for e in summary["runs"]] == [(0, "ok"), (1, "ok"), (2, "ok")]
    assert {e["run_id"] for e in summary["runs"]} == {p.name for p in runs}


def test_hydra_multirun_through_submitit(results_dir: Path, slurm_env: dict[str, str]) -> None:
    run = run_cmd(
        ["harness", "bench", "all_reduce", "bench=quick", "bench.max_bytes=64", "bench.dtype=float32,bfloat16", "-m",
         "hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=5",
         f"results.dir={results_dir}"],
        env=slurm_env, timeout=300,
    )  # fmt: skip
    assert run.proc.returncode == 0, run.output
    runs = [p for p in results_dir.iterdir() if (p / "manifest.json").exists()]
    assert len(runs) == 2
    for path in runs:
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["status"] == "ok" and manifest["launcher"] == "slurm" and manifest["world_size"] == 2


@pytest.mark.mpi
def test_srun_pmi2_with_the_mpi4py_bootstrap(results_dir: Path, slurm_env: dict[str, str]) -> None:
    """MPICH under Slurm's pmi2 plugin: the bootstrap takes MPICH's OFI transport (UCX's long
    business card can be cut by slurmstepd), and MPI is finalized before the run's os._exit."""
    shm_before = {p.name for p in Path("/dev/shm").glob("mpich_shm_*")}
    run = run_cmd(
        ["srun", "--mpi=pmi2", "--kill-on-bad-exit=1", "-N", "2", "-n", "2", "harness", "bench", "all_reduce",
         "bench=quick", "launch.bootstrap=mpi", "launch.timeout_s=120", f"results.dir={results_dir}"],
        env=slurm_env, timeout=240,
    )  # fmt: skip
    assert run.proc.returncode == 0, run.output
    manifest = run.manifest
    assert manifest["status"] == "ok" and manifest["launcher"] == "slurm" and manifest["rendezvous"] == "mpi4py"
    assert manifest["hosts"] == ["n1", "n2"] and manifest["world_size"] == 2
    assert manifest["versions"]["mpi"].startswith("MPICH")
    assert manifest["env"]["MPIR_CVAR_CH4_NETMOD"] == "ofi"
    assert all(r["wrong"] == 0 for r in run.rows)
    assert "mpi/pmi2" not in run.output  # slurmstepd took every PMI request
    assert {p.name for p in Path("/dev/shm").glob("mpich_shm_*")} <= shm_before


def test_accept_sbatch_reports_both_nodes(results_dir: Path, slurm_env: dict[str, str]) -> None:
    """`sbatch slurm/accept.sbatch` on 2 nodes x 2 tasks: per-node all_reduce, node pairs, and a
    report naming both Slurm nodes. Four ranks share two cores: the relative gates are loosened."""
    log, run_dir = sbatch_2x2(
        results_dir, slurm_env, "accept.sbatch", "accept.comm_bytes=256K", "accept.outlier_min_rel=0.5", "hardware=cpu",
        "accept.min_peers=2",  # two nodes are peers enough here: the relative gates judge
        "hardware.thresholds.gemm_float32=0.5", "hardware.thresholds.memory_triad=0.4",
        "hardware.thresholds.all_reduce_busbw=0.2", "hardware.thresholds.node_pair_busbw=0.2",
    )  # fmt: skip
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["hosts"] == ["n1", "n2"] and manifest["accept"]["verdict"] == "pass"
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    checks = {(r["name"], r["subject"]) for r in rows if r["kind"] == "accept_check" and r["status"] == "pass"}
    for node in ("n1", "n2"):
        assert ("all_reduce_busbw_gbps", node) in checks and ("node_pair_busbw_gbps", node) in checks
    report = (run_dir / "report.md").read_text()
    assert "| n1 |" in report and "| n2 |" in report and "acceptance: PASS" in log


def test_tensor_parallel_groups_stay_inside_a_node(
    results_dir: Path, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """tp=2 on 2 nodes × 2 ranks (issue 13): TP is the innermost mesh dimension, so each TP group
    is the two ranks of one node, and the data-parallel groups span the nodes."""
    run = submit(results_dir, slurm_env, "train", "engine=fsdp", "parallel.tp=2", "train.steps=2",
                 "train.seq_len=32", "train.global_batch=4", "train.micro_batch=1", "slurm.nodes=2",
                 "slurm.ntasks_per_node=2", f"train.ckpt_dir={tmp_path}/ck", "train.resume=never")  # fmt: skip
    assert run.proc.returncode == 0, run.output
    manifest = run.manifest
    assert manifest["status"] == "ok" and manifest["world_size"] == 4 and manifest["hosts"] == ["n1", "n2"]
    mesh = manifest["train"]["mesh"]
    assert mesh["dims"]["tp"] == 2 and mesh["dims"]["dp_shard"] == 2
    assert mesh["groups"]["tp"] == [{"ranks": [0, 1], "hosts": "n1"}, {"ranks": [2, 3], "hosts": "n2"}]
    assert all(group["hosts"] == "n[1-2]" for group in mesh["groups"]["dp_shard"])
    assert mesh["tp_within_node"] is True
