"""gemm and all_reduce on 2 ranks through every real launcher: the harness's own local launch,
torchrun, mpiexec (mpi4py bootstrap) and srun on the local Slurm cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run, need, run_cmd

pytestmark = pytest.mark.integration

QUICK = ["gemm,all_reduce", "bench=quick"]


def check_good_run(run: Run, launcher: str, world_size: int = 2) -> None:
    """What every successful 2-rank run must show."""
    assert run.proc.returncode == 0, run.output
    assert run.run_dir is not None and run.run_dir.is_dir(), run.output
    run.validate()
    manifest = run.manifest
    assert manifest["status"] == "ok"
    assert manifest["error"] is None
    assert manifest["launcher"] == launcher
    assert manifest["world_size"] == world_size
    assert sorted(d["rank"] for d in manifest["devices"]) == list(range(world_size))
    assert all(d["type"] == "cpu" and d["name"] for d in manifest["devices"])
    assert manifest["config"]["bench"]["names"] == ["gemm", "all_reduce"]
    assert manifest["versions"]["torch"]
    assert manifest["finished_at"] >= manifest["started_at"]
    rows = run.rows
    gemm = [r for r in rows if r["kind"] == "gemm"]
    all_reduce = [r for r in rows if r["kind"] == "all_reduce"]
    # bench=quick: 3 default CPU dtypes x 2 shapes, one row per rank each
    assert len(gemm) == 3 * 2 * world_size
    assert sorted({r["rank"] for r in gemm}) == list(range(world_size))
    assert all(r["passed"] and r["rel_error"] <= r["tolerance"] and r["tflops"] > 0 for r in gemm)
    # 4 B, 64 B, 1 KiB, 16 KiB (step 16 up to 64 KiB) x out-of-place/in-place, float32
    assert [r["bytes"] for r in all_reduce] == [4, 4, 64, 64, 1024, 1024, 16384, 16384]
    assert all(r["wrong"] == 0 and r["world_size"] == world_size for r in all_reduce)
    for r in all_reduce:
        assert r["time_us_min"] <= r["time_us"] == r["time_us_max"]
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * 2 * (world_size - 1) / world_size)
        assert r["algbw_gbps"] == pytest.approx(r["bytes"] / (r["time_us"] * 1e-6) / 1e9)
    assert manifest["rows"] == len(rows)
    assert run.proc.stdout.strip().splitlines()[-1].endswith(run.run_dir.name)


def test_local_launch(results_dir: Path) -> None:
    run = run_cmd(["harness", "bench", *QUICK, "launch.nproc=2", f"results.dir={results_dir}"])
    check_good_run(run, "local")


def test_torchrun(results_dir: Path) -> None:
    need("torchrun", "torch's launcher")
    run = run_cmd(["torchrun", "--nproc-per-node", "2", "-m", "harness", "bench", *QUICK, f"results.dir={results_dir}"])
    check_good_run(run, "torchrun")


@pytest.mark.mpi
def test_mpiexec(results_dir: Path) -> None:
    need("mpiexec", "an MPI for mpi4py (pip install mpich mpi4py; make test installs it)")
    shm_before = set(Path("/dev/shm").glob("mpich_shm_*"))
    run = run_cmd(["mpiexec", "-n", "2", "harness", "bench", *QUICK, f"results.dir={results_dir}"])
    check_good_run(run, "mpi")
    assert "mpi" in run.manifest["versions"]
    assert set(Path("/dev/shm").glob("mpich_shm_*")) <= shm_before  # MPI finalized after the bootstrap


@pytest.mark.slurm
def test_srun_one_node(results_dir: Path, slurm_env: dict[str, str]) -> None:
    cmd = ["srun", "-n", "2", "-N", "1", "harness", "bench", *QUICK, f"results.dir={results_dir}"]
    run = run_cmd(cmd, env=slurm_env)
    check_good_run(run, "slurm")
    assert run.manifest["env"]["SLURM_STEP_NUM_TASKS"] == "2"


@pytest.mark.slurm
def test_srun_two_nodes(results_dir: Path, slurm_env: dict[str, str]) -> None:
    cmd = ["srun", "-N", "2", "-n", "2", "harness", "bench", *QUICK, f"results.dir={results_dir}"]
    run = run_cmd(cmd, env=slurm_env)
    check_good_run(run, "slurm")
    # Ranks sit on the two (fake) nodes; MASTER_ADDR came from the first of them.
    assert run.manifest["env"]["SLURM_STEP_NODELIST"] == "n[1-2]"
