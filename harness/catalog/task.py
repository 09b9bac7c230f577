"""`harness results list|show|query|baseline`: reading runs back, writing nothing (the listing
index aside) and starting no ranks. The commands that match rows by identity (compare, regress,
trend, export) are in analysis.py.

    harness results list results.task=accept results.since=2026-11-01
    harness results show results/20261203T101530Z-bench-1a2b3c
    harness results query "select host, median(tflops) from rows where kind = 'gemm' group by host"
    harness results baseline results/20261203T101530Z-accept-1a2b3c results.name=gpu-a
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import display
from harness.catalog.baseline import resolve_run, set_baseline
from harness.catalog.filters import RunFilter
from harness.catalog.query import query, views_help
from harness.catalog.show import list_runs, list_table, show
from harness.config.job import Job
from harness.config.schema import ResultsConfig
from harness.config.validate import writable_folder
from harness.errors import EXIT_OK, ConfigError
from harness.results import RunRecord
from harness.tasks import Outcome


@dataclass(frozen=True)
class ResultsPlan:
    """What a results command reads: the results dir, the runs named (resolved), the filter."""

    results_dir: str
    runs: tuple[str, ...] = ()


def run_filter(r: ResultsConfig) -> RunFilter:
    """results.task/status/host/device_name/config/since/until/sweep as a filter (ConfigError for
    a date or key=value that does not parse)."""
    return RunFilter.parse(task=r.task, status=r.status, host=r.host, device_name=r.device_name,
                           config=tuple(r.config), since=r.since, until=r.until, sweep=r.sweep)  # fmt: skip


def resolved_runs(r: ResultsConfig, *, least: int = 0, most: int | None = None) -> tuple[str, ...]:
    """The RUN arguments as run directories (a path, a run id under results.dir, or a baseline)."""
    if len(r.runs) < least:
        raise ConfigError(f"give at least {least} run director{'y' if least == 1 else 'ies'} (RUN ...), e.g. "
                          f"harness results show {r.dir}/<run id>")  # fmt: skip
    if most is not None and len(r.runs) > most:
        raise ConfigError(f"unexpected argument {r.runs[most]!r}: this command takes {most} run(s)")
    return tuple(str(resolve_run(run, r.dir)) for run in r.runs)


def validate_list(job: Job) -> ResultsPlan:
    r = job.config.results
    run_filter(r)
    resolved_runs(r, most=0)
    return ResultsPlan(r.dir)


def run_list(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """One line per run (damaged runs too, with the reason), filtered."""
    r = job.config.results
    runs = list_runs(r.dir, run_filter(r)) if Path(r.dir).is_dir() else []
    display.console.print(list_table(runs), markup=False)
    damaged = sum(run.damaged for run in runs)
    display.console.print(f"{len(runs)} runs" + (f", {damaged} damaged" if damaged else "") + f" in {r.dir}")
    return Outcome()


def validate_show(job: Job) -> ResultsPlan:
    r = job.config.results
    return ResultsPlan(r.dir, resolved_runs(r, least=1))


def run_show(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """The manifest summary, the rows as tables and the plots of each run."""
    for index, path in enumerate(job.plan.runs):
        if index:
            display.console.print("")
        display.console.print(show(path).text(), markup=False)
    return Outcome()


def validate_query(job: Job) -> ResultsPlan:
    r = job.config.results
    if not (r.sql or "").strip():
        raise ConfigError(f"harness results query needs the SQL as its argument; {views_help()}")
    return ResultsPlan(r.dir)


def run_query(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """DuckDB over the run directories in place: views `runs` and `rows`."""
    r = job.config.results
    found = query(r.sql or "", r.dir)
    display.console.print(found.table(), markup=False)
    return Outcome()


def validate_baseline(job: Job) -> ResultsPlan:
    r = job.config.results
    if not r.name:
        raise ConfigError("harness results baseline RUN needs results.name=NAME (a system or partition, e.g. gpu-a)")
    writable_folder("results.dir", r.dir)
    return ResultsPlan(r.dir, resolved_runs(r, least=1, most=1))


def run_baseline(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """Name a run the baseline of a system or partition (results.dir/baselines.json)."""
    r = job.config.results
    chosen = set_baseline(r.dir, r.name or "", job.plan.runs[0])
    display.console.print(f"baseline {chosen.name}: {chosen.run_id}", markup=False)
    return Outcome("ok", None, EXIT_OK)
