"""`harness results --help`."""

from __future__ import annotations

from harness.catalog.query import views_help
from harness.config.docs import describe
from harness.config.helptext import keys_table
from harness.config.schema import ResultsConfig


def text() -> str:
    """Every results command with an example, the results.* keys, and the query views."""
    keys = [(f"results.{k}", d, doc) for k, d, doc in describe(ResultsConfig)]
    return f"""usage: harness results COMMAND [RUN ...] [key=value ...]

Run directories are the record: these commands read them in place (a small index under
results.dir speeds up listing); compare, regress and trend write a run directory of their own.

commands:
  list       harness results list results.task=accept results.status=failed results.since=2026-11-01
  show       harness results show results/20261203T101530Z-bench-1a2b3c
  compare    harness results compare RUN_A RUN_B [RUN_C ...]      # ratios against RUN_A, beyond the runs' noise
  baseline   harness results baseline RUN results.name=gpu-a       # names it in results.dir/baselines.json
  regress    harness results regress RUN results.baseline=gpu-a [results.tolerance=0.05]   # exit 1 if worse
  query      harness results query "select host, median(tflops) from rows where kind = 'gemm' group by host"
  export     harness results export RUN results.format=csv|prometheus|mllog > out
  trend      harness results trend results.metric=gemm.tflops results.where=[dtype=bfloat16] results.task=accept

keys:
{keys_table(keys)}

{views_help()}

exit codes: 0 ok, 1 regress found a regression, 2 bad input (an unknown run, runs that share nothing)"""
