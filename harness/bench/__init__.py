"""Benchmark plug-ins and their registry. `harness bench NAME` runs `BENCHMARKS[NAME]`."""

from __future__ import annotations

from harness.bench import all_reduce, gemm
from harness.bench.base import Benchmark, BenchSpec, Case, Column
from harness.errors import ConfigError

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (gemm.BENCHMARK, all_reduce.BENCHMARK)}


def get(name: str) -> Benchmark:
    """The plug-in called `name`; ConfigError listing the choices otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; choices: {', '.join(BENCHMARKS)}") from None


__all__ = ["BENCHMARKS", "BenchSpec", "Benchmark", "Case", "Column", "get"]
