"""`harness bench --help`."""

from __future__ import annotations

from harness.bench.registry import ALIASES, BENCHMARKS
from harness.config.compose import group_options
from harness.config.docs import describe
from harness.config.helptext import keys_table
from harness.config.schema import BenchConfig, RunConfig
from harness.dtypes import ALIAS_HELP


def text() -> str:
    """The benchmarks, every bench.* key with its default and unit, presets and examples."""
    benches = "\n".join(
        f"  {b.name:<15} {b.description}\n  {'':<15} keys: {', '.join('bench.' + k for k in b.keys)}"
        for b in BENCHMARKS.values()
    )
    benches += "".join(f"\n  {alias:<15} = {','.join(names)}" for alias, names in ALIASES.items())
    keys = [(f"bench.{k}", d, doc) for k, d, doc in describe(BenchConfig)]
    debug = [r for r in describe(RunConfig) if r[0].startswith("debug.")]
    return f"""usage: harness bench NAME[,NAME...] [key=value ...] [-m]

benchmarks:
{benches}

bench keys (defaults from the preset bench=default):
{keys_table(keys)}

sizes are binary: 1K = 1KB = 1KiB = 1024 bytes, 1G = 1GB = 1GiB = 2^30 bytes ('b', bits, is refused)
dtypes: the canonical names, or {ALIAS_HELP}
presets: bench={"|".join(group_options("bench"))}
fault injection (tests): {", ".join(f"{k}={d}" for k, d, _ in debug)}

examples:
  harness bench gemm bench.dtype=bf16 bench.shapes=[8192x8192x8192]
  harness bench all_reduce bench.min_bytes=1M bench.max_bytes=1G bench.step_factor=2
  harness bench gemm bench.dtype=bfloat16 bench.m=1024:8192:1024 bench.n=8192 bench.k=8192
  harness bench collectives bench.groups=2 bench.redop=[sum,max]
  harness bench memory bench.array_bytes=4G
  harness bench hpl bench.hpl_n=[16384]
  harness bench gemm,all_reduce bench=quick results.dir=/scratch/results"""
