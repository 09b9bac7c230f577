"""`harness bench kernels` on CPU: eager and torch.compile measured and checked, the fused path
reported as not applicable, speedups and bandwidth fractions consistent with the rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cmd

pytestmark = pytest.mark.integration
SMALL = ["harness", "bench", "kernels", "bench.kernel_ops=[rms_norm]", "bench.kernel_tokens=16", "bench.warmup=1",
         "bench.iters=3", "launch.nproc=1"]  # fmt: skip


def test_kernels_on_cpu(results_dir: Path) -> None:
    run = run_cmd([*SMALL, f"results.dir={results_dir}"], timeout=240)
    assert run.proc.returncode == 0, run.output
    run.validate()
    rows = run.rows
    copy = next(r for r in rows if r["op"] == "copy")
    by = {(r["mode"], r["impl"]): r for r in rows if r["op"] == "rms_norm"}
    assert set(by) == {("fwd", "eager"), ("fwd", "compile"), ("fwd_bwd", "eager"), ("fwd_bwd", "compile")}
    for (mode, impl), row in by.items():
        assert row["passed"] and row["max_rel_error"] < 1e-4
        assert row["gbps"] == pytest.approx(row["bytes"] / (row["time_us"] * 1e-6) / 1e9)
        assert row["bw_fraction"] == pytest.approx(row["gbps"] / copy["gbps"])
        if impl == "compile":
            eager = by[(mode, "eager")]
            assert row["speedup_vs_eager"] == pytest.approx(eager["time_us"] / row["time_us"])
        assert row["peak_mem_bytes"] is None  # measured on CUDA only
    manifest = run.manifest
    assert manifest["summary"]["kernels"]["fused"] == "not applicable (needs a CUDA device)"
    assert any("fused not applicable on cpu" in note for note in manifest["notes"])


def test_wrong_kernel_result_fails_the_run(results_dir: Path) -> None:
    run = run_cmd([*SMALL, "bench.kernel_impls=[eager]", "debug.fault=wrong_result", f"results.dir={results_dir}"],
                  timeout=240)  # fmt: skip
    assert run.proc.returncode == 1, run.output
    assert run.manifest["status"] == "failed"
    assert [r["passed"] for r in run.rows] == [False, True, True]  # the first case (copy) was corrupted
