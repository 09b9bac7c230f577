"""`harness results list` and `show`: filters, the listing table, sweep summaries, one run in detail."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from harness.catalog import RunFilter, list_runs, list_table, show, sweep_runs, sweep_table
from harness.catalog.filters import config_matches, parse_bound
from harness.errors import ConfigError
from tests.unit.test_catalog_helpers import KINDS, T0, all_reduce_rows, copy_v1, gemm_rows, write_run

SWEEP = "0f8e4c1a-6a55-4c8e-9a63-1d7b2b9a0c01"


@pytest.fixture
def runs(results_dir: Path) -> dict[str, Path]:
    """Six runs over five days, two hosts, two device names, one sweep, one failed, one damaged."""
    day = timedelta(days=1)
    made = {
        "v1": copy_v1(results_dir),
        "a": write_run(results_dir, gemm_rows(host="node1"), hosts=("node1",), device="NVIDIA H100 80GB HBM3",
                       started=T0 + day, sweep_id=SWEEP, config={"bench": {"dtype": "bfloat16", "iters": 20}}),
        "b": write_run(results_dir, gemm_rows(host="node2"), hosts=("node2",), device="NVIDIA H200",
                       started=T0 + 2 * day, sweep_id=SWEEP, status="failed",
                       config={"bench": {"dtype": "float32", "iters": 20, "check": True}}),
        "c": write_run(results_dir, all_reduce_rows(), hosts=("node1", "node2"), task="bench", started=T0 + 3 * day,
                       config={"bench": {"names": ["all_reduce", "gemm"], "iters": 5.0}}),
        "t": write_run(results_dir, [], task="train", started=T0 + 4 * day, status="running", config={"train": {}},
                       heartbeat_at="2026-01-01T00:00:00Z"),
    }  # fmt: skip
    damaged = write_run(results_dir, gemm_rows(), started=T0 + 5 * day)
    (damaged / "manifest.json").write_text("{")
    made["damaged"] = damaged
    return made


def names(results_dir: Path, **kw: object) -> set[str]:
    found = list_runs(results_dir, RunFilter.parse(**kw), kinds=KINDS)  # type: ignore[arg-type]
    return {r.path.name for r in found}


def test_each_filter(results_dir: Path, runs: dict[str, Path]) -> None:
    def expect(*keys: str) -> set[str]:
        return {runs[k].name for k in keys}

    assert names(results_dir) == expect(*runs)
    assert names(results_dir, task="train") == expect("t")
    assert names(results_dir, status="failed") == expect("b")
    assert names(results_dir, status="abandoned") == expect("t")
    assert names(results_dir, status="damaged") == expect("damaged")
    assert names(results_dir, host="node2") == expect("b", "c")
    assert names(results_dir, host="vm") == expect("v1", "t")
    assert names(results_dir, device_name="h100") == expect("a")
    assert names(results_dir, device_name="NVIDIA") == expect("a", "b")
    assert names(results_dir, sweep=SWEEP) == expect("a", "b")
    assert names(results_dir, config=["bench.dtype=bfloat16"]) == expect("a")
    assert names(results_dir, config=["bench.iters=20"]) == expect("a", "b")
    assert names(results_dir, config=["bench.iters=5"]) == expect("v1", "c")  # 5 and 5.0 alike
    assert names(results_dir, config=["bench.names=gemm"]) == expect("v1", "c")  # one element of a list
    assert names(results_dir, config=["bench.check=true"]) == expect("b")
    assert names(results_dir, config=["bench.iters=20", "bench.dtype=float32"]) == expect("b")
    assert names(results_dir, config=["no.such.key=1"]) == set()


def test_date_range(results_dir: Path, runs: dict[str, Path]) -> None:
    # v1 started 2026-11-28T03:10, a on the 29th, b 30th, c Dec 1st, t 2nd, damaged 3rd (from its directory name)
    assert names(results_dir, since="2026-11-29", until="2026-11-30") == {runs["a"].name, runs["b"].name}
    assert names(results_dir, since="2026-12-02") == {runs["t"].name, runs["damaged"].name}
    assert names(results_dir, until="2026-11-28") == {runs["v1"].name}
    assert names(results_dir, since="2026-11-28T03:11:00Z", until="2026-11-29T23:59:59Z") == {runs["a"].name}


def test_bad_filters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        RunFilter.parse(config=["bench.iters"])
    with pytest.raises(ConfigError, match="not an ISO date"):
        RunFilter.parse(since="last tuesday")
    assert parse_bound("2026-11-28", end=True) == parse_bound("2026-11-29", end=False)
    assert config_matches({"a": "x"}, "a", "x") and not config_matches({"a": True}, "a", "1")


def test_the_listing_shows_each_run_and_the_damage(results_dir: Path, runs: dict[str, Path]) -> None:
    text = list_table(list_runs(results_dir, kinds=KINDS))
    lines = text.splitlines()
    assert len(lines) == 2 + len(runs)
    assert lines[0].split()[:4] == ["run", "task", "started", "(UTC)"]
    v1 = next(line for line in lines if runs["v1"].name in line)
    assert "ok" in v1 and "gemm.tflops 0.08985 TFLOP/s" in v1 and "AMD EPYC" in v1
    damaged = next(line for line in lines if runs["damaged"].name in line)
    assert "DAMAGED: manifest.json is not JSON" in damaged


def test_sweep_summary(results_dir: Path, runs: dict[str, Path]) -> None:
    members = sweep_runs(results_dir, SWEEP, kinds=KINDS)
    assert [r.path for r in members] == [runs["a"], runs["b"]]
    text = sweep_table(SWEEP, members)
    head, *rest = text.splitlines()
    assert head == f"sweep {SWEEP}: 2 runs, 1 failed, 1 ok"
    assert "ok" in rest[2] and "gemm.tflops" in rest[2] and "failed" in rest[3]


def test_show_a_run(results_dir: Path) -> None:
    path = write_run(results_dir, [*gemm_rows(), *all_reduce_rows()], files={"busbw.png": b"png", "log.txt": b""},
                     notes=["rounded 1000 to 1024"])  # fmt: skip
    detail = show(path, KINDS)
    facts = dict(detail.facts)
    assert facts["status"] == "ok, reason ok, exit code 0" and facts["note"] == "rounded 1000 to 1024"
    assert [kind for kind, _ in detail.tables] == ["gemm", "all_reduce"]
    gemm = dict(detail.tables)["gemm"].splitlines()
    assert gemm[0].split() == ["dtype", "m", "n", "k", "rank", "tflops", "passed"] and len(gemm) == 2 + 8
    assert detail.plots == ("busbw.png",)
    assert str(path / "busbw.png") in detail.text()


def test_show_a_v1_run_without_kinds_and_a_damaged_one(results_dir: Path) -> None:
    detail = show(copy_v1(results_dir))
    header = dict(detail.tables)["all_reduce"].splitlines()[0].split()
    assert header[:3] == ["op", "redop", "dtype"] and "busbw_gbps" in header  # every field, in row order
    broken = write_run(results_dir, gemm_rows(), started=T0 + timedelta(hours=1))
    (broken / "manifest.json").write_text("")
    detail = show(broken, KINDS)
    assert dict(detail.facts)["damage"].startswith("manifest.json is not JSON") and len(detail.tables) == 1
