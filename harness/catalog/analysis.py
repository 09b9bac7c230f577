"""`harness results compare|regress|trend|export`: rows matched by the identity their kind declares.
compare, regress and trend write a run directory of their own (their table, plot, and for regress
junit.xml); export writes to standard output.

    harness results compare RUN_A RUN_B
    harness results regress RUN results.baseline=gpu-a            # exit 1 on a regression
    harness results trend results.metric=gemm.tflops results.where=[dtype=bfloat16] results.task=accept
    harness results export RUN results.format=prometheus > /var/lib/node_exporter/harness.prom
"""

from __future__ import annotations

import sys

from harness import display
from harness.catalog.baseline import resolve_run
from harness.catalog.compare import compare
from harness.catalog.export import FORMATS, export
from harness.catalog.filters import parse_config_match
from harness.catalog.kinds import all_kinds
from harness.catalog.regress import regress
from harness.catalog.show import list_runs
from harness.catalog.task import ResultsPlan, resolved_runs, run_filter
from harness.catalog.trend import resolve_metric, trend
from harness.config.job import Job
from harness.errors import EXIT_FAILED, EXIT_OK, ConfigError, did_you_mean
from harness.results import RunRecord
from harness.tasks import Outcome


def validate_compare(job: Job) -> ResultsPlan:
    r = job.config.results
    runs = resolved_runs(r, least=2)
    compare(runs, all_kinds())  # runs that share no identity: one line, exit 2, before any record
    return ResultsPlan(r.dir, runs)


def run_compare(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """Ratios per matched metric against the first run, beyond the runs' own noise; a plot."""
    comparison = compare(job.plan.runs, all_kinds())
    text = comparison.table()
    if record:
        record.add_rows([{"kind": "comparison", "passed": True, **row} for row in comparison.rows()])
        record.add_file("comparison.txt", (text + "\n").encode())
        png = comparison.plot()
        if png:
            record.add_file("comparison.png", png)
        record.update(summary={"compare": comparison.summary()})
    return Outcome("ok", None, EXIT_OK, lambda: display.console.print(text, markup=False))


def validate_regress(job: Job) -> ResultsPlan:
    r = job.config.results
    runs = resolved_runs(r, least=1, most=1)
    if not r.baseline:
        raise ConfigError("harness results regress RUN needs results.baseline=NAME|RUN (a name given with "
                          "harness results baseline, or a run directory)")  # fmt: skip
    if r.tolerance is not None and not 0 <= r.tolerance < 1:
        raise ConfigError(f"results.tolerance={r.tolerance} must be a fraction from 0 to 1, e.g. 0.05")
    baseline = resolve_run(r.baseline, r.dir)
    regress(runs[0], baseline, all_kinds(), r.tolerance)  # nothing matched: one line, exit 2
    return ResultsPlan(r.dir, (*runs, str(baseline)))


def run_regress(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """Exit 1 when a matched metric is worse than the baseline beyond the tolerance."""
    run, baseline = job.plan.runs
    verdict = regress(run, baseline, all_kinds(), job.config.results.tolerance)
    lines = verdict.lines()
    if record:
        record.add_rows([{"kind": "regression_check", "passed": not c.failed, **c.to_row()} for c in verdict.checks])
        record.add_file("junit.xml", verdict.junit_xml())
        record.add_file("regress.txt", ("\n".join(lines) + "\n").encode())
        record.update(summary={"regress": {"failures": len(verdict.failures), "checks": len(verdict.checks),
                                           "baseline": verdict.baseline_id, "run": verdict.run_id}})  # fmt: skip

    def show() -> None:
        for line in lines:
            display.console.print(line, markup=False)

    if verdict.failures:
        return Outcome("failed", f"{len(verdict.failures)} metrics regressed against {verdict.baseline_id}",
                       EXIT_FAILED, show)  # fmt: skip
    return Outcome("ok", None, EXIT_OK, show)


def _where(items: list[str]) -> dict[str, str]:
    return dict(parse_config_match(item) for item in items)


def validate_trend(job: Job) -> ResultsPlan:
    r = job.config.results
    if not r.metric:
        kinds = all_kinds()
        example = ", ".join(f"{k}.{m.name}" for k in ("gemm", "memory", "all_reduce") for m in kinds[k].metrics[:1])
        raise ConfigError(f"harness results trend needs results.metric=KIND.METRIC, e.g. {example}")
    resolve_metric(r.metric, all_kinds())
    if r.by not in ("host", "gpu"):
        raise ConfigError(f"results.by={r.by!r}; choices: host, gpu")
    run_filter(r)
    _where(list(r.where))
    return ResultsPlan(r.dir, resolved_runs(r))


def run_trend(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """The metric against time per host or GPU, over the runs the filter keeps (or those named)."""
    r = job.config.results
    runs = list(job.plan.runs) or [run.path for run in list_runs(r.dir, run_filter(r)) if not run.damaged]
    found = trend(runs, r.metric or "", all_kinds(), by=r.by, where=_where(list(r.where)))  # type: ignore[arg-type]
    if r.host:
        found = found.only(lambda point: point.subject == r.host or point.subject.startswith(f"{r.host}:"))
    text = found.table()
    if record:
        record.add_rows([{"kind": "trend_point", "passed": True, **p.to_row()} for p in found.points])
        record.add_file("trend.txt", (text + "\n").encode())
        if found.points:
            record.add_file("trend.png", found.plot())
    return Outcome("ok", None, EXIT_OK, lambda: display.console.print(text, markup=False))


def validate_export(job: Job) -> ResultsPlan:
    r = job.config.results
    if r.format not in FORMATS:
        raise ConfigError(
            f"results.format={r.format!r}{did_you_mean(r.format, FORMATS)}; choices: {', '.join(FORMATS)}"
        )
    return ResultsPlan(r.dir, resolved_runs(r, least=1))


def run_export(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """The runs as CSV, Prometheus text or MLPerf log lines, on standard output (nothing else is
    printed there, so it can be redirected to a file)."""
    sys.stdout.write(export(job.plan.runs, job.config.results.format, all_kinds()))  # type: ignore[arg-type]
    sys.stdout.flush()
    return Outcome()
