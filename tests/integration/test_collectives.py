"""Every collective on 3 and 4 gloo ranks, including sub-communicators, and the `all` suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.bench.collectives import OPS
from tests.conftest import Run, run_cmd

pytestmark = pytest.mark.integration

OPS_NAMES = [op.name for op in OPS]


def collectives(results_dir: Path, nproc: int, *extra: str) -> Run:
    cmd = ["harness", "bench", "collectives", "bench=quick", "bench.max_bytes=1K", "bench.iters=3",
           f"launch.nproc={nproc}", "telemetry.interval_ms=20", f"results.dir={results_dir}", *extra]  # fmt: skip
    run = run_cmd(cmd, timeout=240)
    assert run.proc.returncode == 0, run.output
    run.validate()
    assert run.manifest["status"] == "ok"
    return run


@pytest.mark.parametrize("nproc", [3, 4])
def test_every_collective(results_dir: Path, nproc: int) -> None:
    run = collectives(results_dir, nproc, "bench.redop=[sum,max]")
    rows = run.rows
    assert {r["kind"] for r in rows} == set(OPS_NAMES)
    assert all(r["wrong"] == 0 and r["world_size"] == nproc and r["group_size"] == nproc for r in rows)
    for row in rows:
        assert row["time_us_min"] <= row["time_us"] == row["time_us_max"]
        assert 0 <= row["slowest_rank"] < nproc
        assert row["telemetry_samples"] >= 1
        if row["kind"] in ("all_gather", "reduce_scatter", "all_to_all"):
            assert row["count"] % nproc == 0  # split per rank: rounded to a multiple of the ranks
    reducers = {(r["kind"], r["redop"]) for r in rows if r["redop"]}
    assert reducers == {(op, redop) for op in ("all_reduce", "reduce", "reduce_scatter") for redop in ("sum", "max")}
    assert (run.run_dir / "busbw.png").read_bytes()[:4] == b"\x89PNG"
    assert set(run.manifest["summary"]) == set(OPS_NAMES)
    if nproc == 3:
        assert any("rounded down" in note for note in run.manifest["notes"])


def test_groups_split_the_world(results_dir: Path) -> None:
    run = collectives(results_dir, 4, "bench.groups=2", "bench.root=1")
    rows = run.rows
    assert {r["group"] for r in rows} == {0, 1}
    assert all(r["group_size"] == 2 and r["wrong"] == 0 for r in rows)
    for row in rows:  # the slowest rank of a group belongs to it: ranks 0-1 and 2-3
        assert row["slowest_rank"] // 2 == row["group"]
    # a case gives one row per group
    per_case = {}
    for row in rows:
        key = (row["kind"], row["dtype"], row["bytes"], row["in_place"], row["redop"])
        per_case.setdefault(key, []).append(row["group"])
    assert all(sorted(groups) == [0, 1] for groups in per_case.values())


def test_groups_that_do_not_divide_the_world_are_refused(results_dir: Path) -> None:
    run = run_cmd(["harness", "bench", "all_reduce", "bench.groups=3", "launch.nproc=2", f"results.dir={results_dir}"])
    assert run.proc.returncode == 2, run.output
    assert "bench.groups=3 does not divide the world size 2; choose one of 1, 2" in run.proc.stderr
    assert list(results_dir.iterdir()) == []


def test_the_all_suite(results_dir: Path) -> None:
    cmd = ["harness", "bench", "all", "bench=quick", "bench.array_bytes=8M", "bench.hpl_n=[256]",
           "launch.nproc=2", f"results.dir={results_dir}"]  # fmt: skip
    run = run_cmd(cmd, timeout=240)
    assert run.proc.returncode == 0, run.output
    run.validate()
    benches = {r["kind"] for r in run.rows}
    assert benches == {"gemm", "memory", "hpl", *OPS_NAMES}  # host_link does not apply on CPU
    assert "host_link: not applicable on cpu (no device memory, no host link); skipped" in run.manifest["notes"]
    assert sorted(run.manifest["files"]) == ["busbw.png", "console.log", "gemm_tflops.png", "memory_gbps.png"]
    hpl = [r for r in run.rows if r["kind"] == "hpl"]
    assert len(hpl) == 2 and all(r["passed"] and r["residual"] < 16 and r["gflops"] > 0 for r in hpl)
    memory = [r for r in run.rows if r["kind"] == "memory"]
    assert {r["kernel"] for r in memory} == {"copy", "scale", "add", "triad"} and all(r["wrong"] == 0 for r in memory)
    assert run.manifest["summary"]["gemm"]["float32"]["best_tflops"] > 0
    assert "gemm: float32 best" in run.proc.stdout  # the summary line
