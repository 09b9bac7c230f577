"""`harness results query`: SQL over the run directories, read in place by DuckDB.

Two views:

- `runs`: one row per run whose manifest parses. Columns: id, task, status (as `list` shows it:
  `abandoned` for a running run with a stale heartbeat), started_at and finished_at (TIMESTAMPTZ,
  UTC), world_size, hosts (VARCHAR[]), devices (JSON), git_sha, git_dirty, sweep_id, exit_code,
  reason, heartbeat_at, schema_version, launcher, error, rows, failed_rows, damage (why the run is
  damaged, or NULL), path, and `config`, `summary`, `versions` as JSON columns. The config is a JSON
  column rather than dotted columns because every task has other keys: read it with DuckDB's JSON
  operators, e.g. `config->>'$.bench.dtype'` or `json_extract(config, '$.launch.nproc')`.
- `rows`: every row of every run: run_id, kind (`kind`, or `bench` in schema v1/v2 rows) and one
  typed column per row field found in any run (NULL where a row lacks it). Lines that do not
  parse are skipped.

Example, the median bf16 gemm TFLOP/s per host over the last 30 days:

    SELECT r.host, median(r.tflops) AS tflops, count(*) AS n
    FROM rows r JOIN runs USING (run_id)
    WHERE r.kind = 'gemm' AND r.dtype = 'bfloat16' AND runs.started_at >= now() - INTERVAL 30 DAY
    GROUP BY r.host ORDER BY tflops

(`runs` also has `run_id`, equal to `id`, for joins.) Automatic extension installs and loads are
off: JSON support is built into the duckdb wheel and nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from harness.catalog.text import table
from harness.errors import ConfigError
from harness.results.read import MANIFEST, ROWS, RunSummary, iter_runs, row_field_types

_MANIFEST_COLUMNS = {
    "run_id": "VARCHAR", "task": "VARCHAR", "status": "VARCHAR", "started_at": "TIMESTAMPTZ",
    "finished_at": "TIMESTAMPTZ", "world_size": "BIGINT", "hosts": "VARCHAR[]", "devices": "JSON",
    "git_sha": "VARCHAR", "git_dirty": "BOOLEAN", "sweep_id": "VARCHAR", "exit_code": "BIGINT", "reason": "VARCHAR",
    "heartbeat_at": "TIMESTAMPTZ", "schema_version": "BIGINT", "launcher": "VARCHAR", "error": "VARCHAR",
    "rows": "BIGINT", "failed_rows": "BIGINT", "config": "JSON", "summary": "JSON", "versions": "JSON",
}  # fmt: skip
_TYPES = {"b": "BOOLEAN", "i": "BIGINT", "f": "DOUBLE", "s": "VARCHAR", "j": "JSON", "m": "JSON", "n": "JSON"}
_COMPUTED = ("run_id", "kind", "bench")
# Settings fixed before any SQL of the user runs: no extension is installed or loaded behind our
# back (compute nodes have no network, and a query must not fetch code), and times read as UTC.
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


@dataclass(frozen=True)
class QueryResult:
    """The columns and rows a query returned."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def table(self) -> str:
        return table(self.columns, self.rows)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _file_list(files: Sequence[str]) -> str:
    return "[" + ", ".join(_quote(f) for f in files) + "]"


def _field(name: str, sql_type: str) -> str:
    """One top-level field of the JSON object `j` as `sql_type`; NULL where absent or not of that type."""
    path = _quote('$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"')
    if sql_type == "JSON":
        return f"json_extract(j, {path})"
    if sql_type.endswith("[]"):
        return f"TRY_CAST(json_extract(j, {path}) AS {sql_type})"
    text = f"json_extract_string(j, {path})"
    return text if sql_type == "VARCHAR" else f"TRY_CAST({text} AS {sql_type})"


def _objects(files: Sequence[str], fmt: str) -> str:
    """The JSON objects of `files` as (j, filename), unparsable ones left out.

    Objects are read whole and fields extracted in the views, rather than read_json with typed
    columns: DuckDB then converts only the fields a query uses (a million rows: 2 s instead of 7)."""
    if not files:
        return "(SELECT NULL::JSON AS j, NULL::VARCHAR AS filename WHERE false)"
    return (f"(SELECT json AS j, filename FROM read_json_objects({_file_list(files)}, format='{fmt}', "
            "ignore_errors=true, filename=true) WHERE json IS NOT NULL)")  # fmt: skip


def connect(results_dir: str | os.PathLike, runs: Sequence[RunSummary] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views `runs` and `rows` over `results_dir` (or over
    `runs`, a listing of it). The files are read when a query needs them."""
    if runs is None:
        runs = list(iter_runs(results_dir))
    con = duckdb.connect(":memory:", config=_CONFIG)
    con.execute("SET TimeZone = 'UTC'")  # ICU is built in; the setting is only known once it is loaded
    readable = [r for r in runs if r.status not in ("unknown", "pending")]
    manifests = [str(r.path / MANIFEST) for r in readable]
    con.execute(
        "CREATE TABLE _listing AS SELECT unnest($files::VARCHAR[]) AS file, unnest($status::VARCHAR[]) AS status, "
        "unnest($damage::VARCHAR[]) AS damage, unnest($path::VARCHAR[]) AS path",
        {"files": manifests, "status": [r.status for r in readable], "damage": [r.damage for r in readable],
         "path": [str(r.path) for r in readable]},
    )  # fmt: skip
    con.execute(_runs_view(manifests))
    with_rows = [str(r.path / ROWS) for r in readable if r.rows and (r.path / ROWS).exists()]
    con.execute(_rows_view(with_rows, row_field_types(readable)))
    return con


def _runs_view(manifests: Sequence[str]) -> str:
    fields = ", ".join(f"{_field(c, t)} AS {_ident(c)}" for c, t in _MANIFEST_COLUMNS.items())
    cols = ", ".join(f"m.{_ident(c)}" for c in _MANIFEST_COLUMNS if c not in ("run_id", "status"))
    return (f"CREATE VIEW runs AS SELECT m.run_id AS id, m.run_id, coalesce(l.status, m.status) AS status, {cols}, "
            f"l.damage, l.path FROM (SELECT {fields}, filename FROM {_objects(manifests, 'unstructured')}) m "
            "LEFT JOIN _listing l ON l.file = m.filename WHERE m.run_id IS NOT NULL")  # fmt: skip


def _rows_view(files: Sequence[str], fields: dict[str, str]) -> str:
    kind = f"coalesce({_field('kind', 'VARCHAR')}, {_field('bench', 'VARCHAR')})"
    run_id = f"coalesce({_field('run_id', 'VARCHAR')}, regexp_extract(filename, '([^/]+)/rows\\.jsonl$', 1))"
    typed = "".join(f", {_field(k, _TYPES[code])} AS {_ident(k)}" for k, code in fields.items() if k not in _COMPUTED)
    return (f"CREATE VIEW rows AS SELECT {run_id} AS run_id, {kind} AS kind{typed} "
            f"FROM {_objects(files, 'newline_delimited')} WHERE {kind} IS NOT NULL")  # fmt: skip


def query(sql: str, results_dir: str | os.PathLike, runs: Sequence[RunSummary] | None = None) -> QueryResult:
    """Run `sql` against the views `runs` and `rows` of `results_dir`. Raises ConfigError (one line)
    for SQL that DuckDB rejects."""
    con = connect(results_dir, runs)
    try:
        cursor = con.execute(sql)
        columns = tuple(d[0] for d in cursor.description or ())
        return QueryResult(columns, tuple(cursor.fetchall()) if columns else ())
    except duckdb.Error as err:
        raise ConfigError(f"query failed: {' '.join(str(err).split())}") from None
    finally:
        con.close()


def views_help() -> str:
    """The module's documentation of the views, for `harness results query --help`."""
    return __doc__ or ""
