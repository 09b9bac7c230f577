"""`harness results query`: DuckDB views `runs` and `rows` over the run directories, read in place."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.catalog import connect, query
from harness.errors import ConfigError
from tests.unit.test_catalog_helpers import all_reduce_rows, copy_v1, gemm_rows, train_rows, write_run

NOW = datetime.now(timezone.utc).replace(microsecond=0)
MEDIAN_PER_HOST = """
    SELECT r.host, median(r.tflops) AS tflops, count(*) AS n
    FROM rows r JOIN runs USING (run_id)
    WHERE r.kind = 'gemm' AND r.dtype = 'bfloat16' AND runs.started_at >= now() - INTERVAL 30 DAY
    GROUP BY r.host ORDER BY r.host
"""


@pytest.fixture
def fleet(results_dir: Path) -> dict[str, Path]:
    """Acceptance-like gemm runs on two hosts at 5, 10 and 40 days ago, a collective run, a training run
    and a damaged run."""
    made = {}
    for days, scale in ((5, 1.0), (10, 0.9), (40, 0.5)):
        for host in ("node1", "node2"):
            factor = scale * (1.0 if host == "node1" else 0.8)
            made[f"{host}-{days}"] = write_run(
                results_dir, gemm_rows(factor, host=host), task="accept", hosts=(host,),
                started=NOW - timedelta(days=days), config={"accept": {"profile": "h100"}, "seed": days},
            )  # fmt: skip
    made["collective"] = write_run(results_dir, all_reduce_rows(), started=NOW - timedelta(days=1))
    made["train"] = write_run(results_dir, train_rows(), task="train", started=NOW - timedelta(days=2))
    damaged = write_run(results_dir, gemm_rows(host="node3"), hosts=("node3",), started=NOW - timedelta(days=3))
    with (damaged / "rows.jsonl").open("a") as fh:
        fh.write('{"kind": "gemm", "tfl')  # a truncated last row: the lines before it still count
    made["damaged"] = damaged
    return made


def test_the_median_gemm_tflops_per_host_over_the_last_30_days(results_dir: Path, fleet: dict[str, Path]) -> None:
    result = query(MEDIAN_PER_HOST, results_dir)
    assert result.columns == ("host", "tflops", "n")
    expected = {}
    for host, factor in (("node1", 1.0), ("node2", 0.8), ("node3", 1.0)):
        days = ((5, 1.0), (10, 0.9)) if host != "node3" else ((3, 1.0),)
        values = [r["tflops"] for _, scale in days for r in gemm_rows(factor * scale) if r["dtype"] == "bfloat16"]
        expected[host] = (statistics.median(values), len(values))
    got = {host: (tflops, n) for host, tflops, n in result.rows}
    assert got.keys() == expected.keys()  # the 40-day-old runs are out
    for host, (tflops, n) in expected.items():
        assert got[host][0] == pytest.approx(tflops) and got[host][1] == n


def test_the_runs_view(results_dir: Path, fleet: dict[str, Path]) -> None:
    result = query("SELECT id, task, status, world_size, hosts, schema_version, damage, config->>'$.seed' AS seed, "
                   "typeof(started_at) FROM runs ORDER BY started_at", results_dir)  # fmt: skip
    rows = {r[0]: r for r in result.rows}
    assert len(rows) == len(fleet)
    assert rows[fleet["collective"].name][1:6] == ("bench", "ok", 2, ["vm"], 3)
    assert {r[8] for r in rows.values()} == {"TIMESTAMP WITH TIME ZONE"}
    assert rows[fleet["node1-40"].name][7] == "40"
    assert rows[fleet["damaged"].name][6].startswith("rows.jsonl: last row truncated")
    assert rows[fleet["train"].name][1] == "train"


def test_the_rows_view(results_dir: Path, fleet: dict[str, Path]) -> None:
    result = query("SELECT kind, count(*) FROM rows GROUP BY kind ORDER BY kind", results_dir)
    counts = dict(result.rows)
    # gemm: 6 accept runs x 8 + the damaged run's 8 complete rows
    assert counts == {"all_reduce": 6, "gemm": 6 * 8 + 8, "train": 20, "train_summary": 1}
    ids = query("SELECT DISTINCT run_id FROM rows", results_dir).rows
    assert {i for (i,) in ids} == {p.name for p in fleet.values()}
    types = dict(query("SELECT column_name, column_type FROM (DESCRIBE rows)", results_dir).rows)
    assert types["tflops"] == "DOUBLE" and types["bytes"] == "BIGINT" and types["in_place"] == "BOOLEAN"
    assert types["dtype"] == "VARCHAR" and types["mfu"] == "JSON"  # only ever null: no type to give it


def test_v1_rows_and_manifests_read_alongside_v3(results_dir: Path) -> None:
    v1 = copy_v1(results_dir)
    write_run(results_dir, gemm_rows(), started=NOW)
    kinds = query("SELECT run_id, kind, count(*) FROM rows GROUP BY ALL ORDER BY run_id, kind", results_dir).rows
    assert kinds[:2] == ((v1.name, "all_reduce", 4), (v1.name, "gemm", 12))  # v1 rows say `bench`
    result = query("SELECT task, status, world_size, hosts, schema_version, git_sha FROM runs ORDER BY id", results_dir)
    assert result.rows[0] == ("bench", "ok", 2, ["vm"], 1, "5ccd3403abf0a3e86953e56cb71eb52e01ffb067")


def test_extensions_are_never_installed_or_loaded(results_dir: Path) -> None:
    con = connect(results_dir)
    names = "('autoinstall_known_extensions', 'autoload_known_extensions')"
    settings = dict(con.execute(f"SELECT name, value FROM duckdb_settings() WHERE name IN {names}").fetchall())
    assert settings == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}


def test_an_empty_results_dir_has_empty_views(results_dir: Path) -> None:
    assert query("SELECT count(*) FROM runs", results_dir).rows == ((0,),)
    assert query("SELECT count(*) FROM rows", results_dir).rows == ((0,),)
    assert query("SELECT count(*) FROM runs", results_dir / "absent").rows == ((0,),)


def test_bad_sql_is_one_config_error(results_dir: Path) -> None:
    write_run(results_dir, gemm_rows())
    with pytest.raises(ConfigError) as err:
        query("SELECT no_such_column FROM runs", results_dir)
    assert str(err.value).startswith("query failed:") and "\n" not in str(err.value)
    assert query("SELECT 1 AS one", results_dir).table().splitlines() == ["one", "---", "  1"]
