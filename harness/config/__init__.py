"""Config schemas, composition and validation."""

from harness.config.compose import compose, config_dir, expand_sweep, to_typed
from harness.config.schema import BenchConfig, LaunchConfig, ResultsConfig, RunConfig, register_configs
from harness.config.validate import FAULTS, bench_spec, resolve_nproc

__all__ = [
    "FAULTS",
    "BenchConfig",
    "LaunchConfig",
    "ResultsConfig",
    "RunConfig",
    "bench_spec",
    "compose",
    "config_dir",
    "expand_sweep",
    "register_configs",
    "resolve_nproc",
    "to_typed",
]
