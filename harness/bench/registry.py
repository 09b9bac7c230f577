"""The benchmark registry: `harness bench NAME` runs `BENCHMARKS[NAME]`; `collectives` and `all`
name groups of them."""

from __future__ import annotations

from harness.bench import gemm, host_link, hpl, kernel_ops, memory, node_pairs
from harness.bench.base import Benchmark
from harness.bench.collectives import OPS
from harness.errors import ConfigError, did_you_mean
from harness.results.kinds import RowKind

_PLUGINS = (gemm, memory, host_link, hpl, kernel_ops, node_pairs)
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (*(m.BENCHMARK for m in _PLUGINS), *OPS)}
ALIASES: dict[str, tuple[str, ...]] = {
    "collectives": tuple(op.name for op in OPS),
    "all": ("gemm", "memory", "host_link", "hpl", *(op.name for op in OPS)),
}


def expand(names: list[str] | tuple[str, ...]) -> list[str]:
    """Names with aliases expanded, each benchmark once, in order."""
    out: list[str] = []
    for name in names:
        for real in ALIASES.get(name, (name,)):
            if real not in out:
                out.append(real)
    return out


def is_known(name: str) -> bool:
    return name in BENCHMARKS or name in ALIASES


def get(name: str) -> Benchmark:
    """The plug-in called `name`; ConfigError listing the choices otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        choices = [*BENCHMARKS, *ALIASES]
        raise ConfigError(f"unknown benchmark {name!r}{did_you_mean(name, choices)}; choices: "
                          f"{', '.join(choices)}") from None  # fmt: skip


def row_kinds() -> dict[str, RowKind]:
    """What every benchmark's rows are (identity fields and metrics), by kind."""
    return {name: bench.row_kind() for name, bench in BENCHMARKS.items()}
