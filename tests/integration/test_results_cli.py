"""`harness results` on real runs of this machine: list with damaged runs, compare, baseline,
regress catching a run slowed by busy loops and passing the baseline's own rows, query, export, trend,
and a sweep's id and summary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, harness_env, run_cmd

pytestmark = pytest.mark.integration

GEMM = ["harness", "bench", "gemm", "launch.nproc=1", "bench.dtype=float32", "bench.shapes=[768x768x768]",
        "bench.warmup=2", "bench.iters=15", "telemetry.enabled=false"]  # fmt: skip
PROM = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
                  r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? -?[0-9.eE+-]+(e[+-]?[0-9]+)?$')  # fmt: skip


def gemm(results: Path, *extra: str) -> Path:
    run = run_cmd([*GEMM, f"results.dir={results}", *extra], timeout=120)
    assert run.proc.returncode == 0, run.output
    assert run.run_dir is not None
    return run.run_dir


def results(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["harness", "results", *args], capture_output=True, text=True, env=harness_env(),
                          timeout=120, cwd=cwd or ROOT)  # fmt: skip


def busy_loops(n: int, seconds: float) -> list[subprocess.Popen]:
    """Processes that hold the cores (each ends by itself after `seconds`)."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("results")
    found = {"base": gemm(tmp), "equal": gemm(tmp)}
    loops = busy_loops(4, 60)
    try:
        found["slow"] = gemm(tmp)
    finally:
        for proc in loops:  # ours: stop them now rather than let them run out
            proc.kill()
            proc.wait()
    found["dir"] = tmp
    return found


def test_compare_baseline_and_regress_catch_a_slower_run(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    compared = results("compare", str(runs["base"]), str(runs["equal"]), str(runs["slow"]), f"results.dir={out}")
    assert compared.returncode == 0, compared.stderr
    assert "gemm" in compared.stdout and "tflops" in compared.stdout and "ratio" in compared.stdout
    run_dir = Path(compared.stdout.strip().splitlines()[-1].removeprefix("results: "))
    assert (run_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run_dir / "manifest.json").read_text())["task"] == "results compare"
    named = results("baseline", str(runs["base"]), "results.name=cpu-vm", f"results.dir={runs['dir']}")
    assert named.returncode == 0 and "baseline cpu-vm" in named.stdout, named.stderr
    # The baseline's own rows pass (ratio 1 on every metric); the run slowed by busy loops on every
    # core is caught (exit 1). An unloaded rerun is not used for the pass: on a shared 2-core CI VM
    # two back-to-back runs of this GEMM differed by 41 %, more than any tolerance that still
    # catches the slowed run with margin.
    tolerance = "results.tolerance=0.25"
    same = results("regress", str(runs["base"]), "results.baseline=cpu-vm", tolerance, f"results.dir={runs['dir']}")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "pass: 0 of 2 metrics" in same.stdout, same.stdout
    slow = results("regress", str(runs["slow"]), "results.baseline=cpu-vm", tolerance, f"results.dir={runs['dir']}")
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert "REGRESSION gemm.tflops [dtype=float32 m=768 n=768 k=768 rank=0]" in slow.stdout
    run_dir = Path(slow.stdout.strip().splitlines()[-1].removeprefix("results: "))
    junit = (run_dir / "junit.xml").read_text()
    assert "<failure" in junit and "gemm.tflops" in junit
    assert json.loads((run_dir / "manifest.json").read_text())["reason"] == "failed"
    unknown = results("regress", str(runs["slow"]), "results.baseline=nosuch", f"results.dir={runs['dir']}")
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr and len(unknown.stderr.splitlines()) == 1


def test_list_shows_damaged_runs_and_filters(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("base", "slow"):
        shutil.copytree(runs[name], folder / runs[name].name)
    truncated = folder / "20261201T000000Z-bench-aaaaaa"
    shutil.copytree(runs["equal"], truncated)
    os.chmod(truncated / "manifest.json", 0o644)
    text = (truncated / "manifest.json").read_text()
    (truncated / "manifest.json").write_text(text[: len(text) // 2])  # a partial write
    (folder / "20261201T000001Z-bench-bbbbbb").mkdir()  # nothing in it
    listed = results("list", f"results.dir={folder}")
    assert listed.returncode == 0, listed.stderr
    assert "4 runs, 2 damaged" in listed.stdout and "not JSON" in listed.stdout
    only = results("list", f"results.dir={folder}", "results.status=damaged")
    assert "2 runs, 2 damaged" in only.stdout
    assert "0 runs" in results("list", f"results.dir={folder}", "results.task=train").stdout


def test_query_export_and_trend(runs: dict[str, Path], tmp_path: Path) -> None:
    sql = "select count(*) as n, max(tflops) as best from rows where kind = 'gemm'"
    queried = results("query", sql, f"results.dir={runs['dir']}")
    assert queried.returncode == 0 and re.search(r"\b3\b", queried.stdout), queried.stdout + queried.stderr
    csv = results("export", str(runs["base"]), "results.format=csv")
    header = csv.stdout.splitlines()[0].split(",")
    assert header[0] == "run_id" and {"kind", "tflops", "m", "rank"} <= set(header)
    prom = results("export", str(runs["base"]), "results.format=prometheus")
    assert prom.returncode == 0
    for line in prom.stdout.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or PROM.match(line), line
    trend = results("trend", "results.metric=gemm.tflops", f"results.dir={runs['dir']}")
    assert trend.returncode == 0 and "gemm.tflops" in trend.stdout, trend.stderr
    bad = results("export", str(runs["base"]), "results.format=parquet")
    assert bad.returncode == 2 and "choices: csv, prometheus, mllog" in bad.stderr


def test_a_sweep_gets_an_id_a_folder_and_a_summary(tmp_path: Path) -> None:
    run = run_cmd(["harness", "bench", "all_reduce", "bench=quick", "bench.max_bytes=64", "launch.nproc=2",
                   "bench.dtype=float32,bfloat16", "-m", f"results.dir={tmp_path}"], timeout=120)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    manifests = [json.loads(p.read_text()) for p in tmp_path.glob("*/manifest.json")]
    (sweep,) = {m["sweep_id"] for m in manifests}
    assert len(manifests) == 2 and re.fullmatch(r"[0-9a-f-]{36}", sweep)
    summary = json.loads((tmp_path / "sweeps" / sweep / "summary.json").read_text())
    assert [e["status"] for e in summary["runs"]] == ["ok", "ok"]
    assert f"sweep {sweep}: 2 runs" in run.proc.stdout
    listed = results("list", f"results.dir={tmp_path}", f"results.sweep={sweep}")
    assert "2 runs" in listed.stdout
    assert not [p for p in (tmp_path / "sweeps").iterdir() if p.name != sweep]  # no empty Hydra job folders
