"""The logic behind `harness results ...`: list, show, compare, baseline, regress, query, export, trend.

Everything reads run directories through `harness.results.read` and writes nothing under results/
except the index (`.index.json`, by harness.results.read) and `baselines.json`. Row kinds (identity
fields, metrics and their directions) come in as a `Mapping[str, RowKind]` from the caller.
Importing this package imports neither torch nor matplotlib (plots import it when drawn).
"""

from harness.catalog.baseline import Baseline, baselines, resolve_run, set_baseline
from harness.catalog.compare import NOISE_FLOOR, Comparison, MetricComparison, compare
from harness.catalog.export import FORMATS, export
from harness.catalog.filters import RunFilter, select
from harness.catalog.query import QueryResult, connect, query
from harness.catalog.regress import REGRESS_FLOOR, Check, Regression, regress
from harness.catalog.show import RunDetail, list_runs, list_table, show, sweep_runs, sweep_table
from harness.catalog.trend import Trend, TrendPoint, trend

__all__ = [
    "FORMATS",
    "NOISE_FLOOR",
    "REGRESS_FLOOR",
    "Baseline",
    "Check",
    "Comparison",
    "MetricComparison",
    "QueryResult",
    "Regression",
    "RunDetail",
    "RunFilter",
    "Trend",
    "TrendPoint",
    "baselines",
    "compare",
    "connect",
    "export",
    "list_runs",
    "list_table",
    "query",
    "regress",
    "resolve_run",
    "select",
    "set_baseline",
    "show",
    "sweep_runs",
    "sweep_table",
    "trend",
]
