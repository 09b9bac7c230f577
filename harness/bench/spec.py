"""`bench.*` parsed into the driver's options (BenchSpec): the keys every benchmark shares here,
each plug-in's own keys by the plug-in itself (`Benchmark.parse_options`)."""

from __future__ import annotations

from harness import dtypes as dt
from harness.bench.base import BenchSpec
from harness.bench.registry import BENCHMARKS
from harness.config.schema import BenchConfig
from harness.config.validate import as_list, int_at_least, size
from harness.errors import ConfigError


def bench_spec(bench: BenchConfig, seed: int) -> BenchSpec:
    """The driver's options from `bench.*`, checked; every plug-in parses its own keys."""
    names = as_list(bench.dtype)
    if names is not None and not names:
        raise ConfigError("bench.dtype is empty; name at least one dtype, or null for the default")
    dtypes = None if names is None else tuple(dict.fromkeys(dt.canonical(n, key="bench.dtype") for n in names))
    min_bytes = size("bench.min_bytes", bench.min_bytes)
    max_bytes = size("bench.max_bytes", bench.max_bytes)
    if min_bytes < 1:
        raise ConfigError("bench.min_bytes must be at least 1 byte")
    if max_bytes < min_bytes:
        raise ConfigError(
            f"bench.max_bytes={bench.max_bytes} ({max_bytes:,} bytes) is smaller than bench.min_bytes="
            f"{bench.min_bytes} ({min_bytes:,} bytes); max_bytes must be >= min_bytes"
        )
    options = {}
    for plugin in BENCHMARKS.values():
        if plugin.option_group not in options:
            options[plugin.option_group] = plugin.parse_options(bench)
    return BenchSpec(
        dtypes=dtypes,
        warmup=int_at_least("bench.warmup", bench.warmup, 0),
        iters=int_at_least("bench.iters", bench.iters, 1),
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        step_factor=int_at_least("bench.step_factor", bench.step_factor, 2),
        groups=int_at_least("bench.groups", bench.groups, 1),
        seed=seed,
        options=options,
    )
