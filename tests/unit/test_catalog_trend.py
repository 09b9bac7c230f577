"""`harness results trend`: a metric against time per host or GPU; and the package's import cost."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from harness.catalog import RunFilter, list_runs, trend
from harness.catalog.trend import resolve_metric
from harness.errors import ConfigError
from tests.unit.test_catalog_helpers import KINDS, T0, all_reduce_rows, gemm_rows, write_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def accept_runs(results_dir: Path) -> list[Path]:
    """Daily acceptance runs of two nodes with two GPUs each for six days; node2's GPU 1 degrades."""
    made = []
    for day in range(6):
        for node in ("node1", "node2"):
            rows = gemm_rows(1.0, host=node, uuid=f"GPU-{node}", dtypes=("bfloat16", "float32"))
            for row in rows:
                if node == "node2" and row["rank"] == 1:
                    row["tflops"] *= 1 - 0.05 * day
            made.append(write_run(results_dir, rows, task="accept", hosts=(node,), started=T0 + timedelta(days=day),
                                  uuids=[f"GPU-{node}-0", f"GPU-{node}-1"]))  # fmt: skip
    write_run(results_dir, all_reduce_rows(), started=T0 + timedelta(days=2, hours=1))  # no gemm rows: no points
    return made


def test_bf16_gemm_per_gpu_shows_the_degrading_one(results_dir: Path, accept_runs: list[Path]) -> None:
    runs = list_runs(results_dir, RunFilter(task="accept"))
    result = trend(runs, "gemm.tflops", KINDS, by="gpu", where={"dtype": "bfloat16"})
    series = result.series()
    assert sorted(series) == ["GPU-node1-0", "GPU-node1-1", "GPU-node2-0", "GPU-node2-1"]
    assert all(len(points) == 6 for points in series.values())
    degrading = [p.value for p in series["GPU-node2-1"]]
    assert degrading == sorted(degrading, reverse=True) and degrading[-1] / degrading[0] == pytest.approx(0.75)
    assert [p.time for p in series["GPU-node1-0"]] == [T0 + timedelta(days=d) for d in range(6)]
    lines = result.table().splitlines()
    assert lines[0].split()[:2] == ["gpu", "runs"] and lines[2].startswith("GPU-node2-1")  # the worst first
    png = result.plot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_by_host_and_the_median_over_its_gpus(results_dir: Path, accept_runs: list[Path]) -> None:
    result = trend(accept_runs, "tflops", KINDS, by="host", where={"dtype": "bfloat16"}, agg="max")
    series = result.series()
    assert sorted(series) == ["node1", "node2"] and result.kind == "gemm" and result.metric.unit == "TFLOP/s"
    assert series["node1"][0].value == pytest.approx(0.22)  # the best shape of the faster GPU


def test_unknown_or_ambiguous_metrics_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a declared metric"):
        resolve_metric("gemm.busbw_gbps", KINDS)
    assert resolve_metric("busbw_gbps", KINDS)[0].kind == "all_reduce"
    with pytest.raises(ConfigError, match="host or gpu"):
        trend([], "gemm.tflops", KINDS, by="rack")  # type: ignore[arg-type]


def test_importing_the_catalog_imports_neither_torch_nor_matplotlib() -> None:
    code = "import sys, harness.catalog; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
