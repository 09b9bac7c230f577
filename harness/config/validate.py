"""Checks that need meaning, not just types: sizes, ranges, choices. Each raises ConfigError with
one line naming the key, the bad value and what is valid."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from harness import units
from harness.bench.base import BenchSpec
from harness.config.schema import BenchConfig, RunConfig
from harness.devices import DTYPES, gpu_count
from harness.errors import ConfigError

FAULTS = ("none", "wrong_result", "raise", "hang")
_SHAPE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _int_at_least(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be a whole number >= {minimum}")
    return value


def _size(key: str, value: Any) -> int:
    try:
        return units.parse_bytes(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _shapes(value: Any) -> tuple[tuple[int, int, int], ...] | None:
    items = _as_list(value)
    if items is None:
        return None
    shapes = []
    for item in items:
        match = _SHAPE.match(str(item))
        dims = tuple(int(g) for g in match.groups()) if match else ()
        if not match or min(dims) < 1:
            raise ConfigError(
                f"bench.shapes: {item!r} is not a shape; use MxNxK with positive sizes, e.g. 4096x4096x4096"
            )
        shapes.append(dims)
    if not shapes:
        raise ConfigError("bench.shapes is empty; give at least one MxNxK or null for the default")
    return tuple(shapes)  # type: ignore[return-value]


def bench_spec(bench: BenchConfig, seed: int) -> BenchSpec:
    """The driver's options from `bench.*`, checked."""
    dtypes = _as_list(bench.dtype)
    if dtypes is not None:
        for dtype in dtypes:
            if dtype not in DTYPES:
                raise ConfigError(f"bench.dtype: unknown dtype {dtype!r}; choices: {', '.join(DTYPES)}")
        if not dtypes:
            raise ConfigError("bench.dtype is empty; name at least one dtype, or null for the default")
    min_bytes = _size("bench.min_bytes", bench.min_bytes)
    max_bytes = _size("bench.max_bytes", bench.max_bytes)
    if min_bytes < 1:
        raise ConfigError("bench.min_bytes must be at least 1 byte")
    if max_bytes < min_bytes:
        raise ConfigError(
            f"bench.max_bytes={bench.max_bytes} is smaller than bench.min_bytes={bench.min_bytes}; "
            "max_bytes must be >= min_bytes"
        )
    return BenchSpec(
        dtypes=tuple(dtypes) if dtypes is not None else None,
        warmup=_int_at_least("bench.warmup", bench.warmup, 0),
        iters=_int_at_least("bench.iters", bench.iters, 1),
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        step_factor=_int_at_least("bench.step_factor", bench.step_factor, 2),
        shapes=_shapes(bench.shapes),
        seed=seed,
    )


def resolve_nproc(value: Any, device_type: str) -> int:
    """launch.nproc: 'auto' is one rank per GPU, or 2 on a CPU-only machine."""
    if value == "auto":
        return gpu_count() if device_type == "cuda" else 2
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"launch.nproc={value!r} must be 'auto' or a whole number >= 1")
    if device_type == "cuda" and value > gpu_count():
        raise ConfigError(f"launch.nproc={value} but this machine has {gpu_count()} GPU(s); choose 1..{gpu_count()}")
    return value


def validate_common(cfg: RunConfig) -> None:
    """Checks that apply to every task."""
    if cfg.debug.fault not in FAULTS:
        raise ConfigError(f"debug.fault={cfg.debug.fault!r}; choices: {', '.join(FAULTS)}")
    _int_at_least("launch.timeout_s", cfg.launch.timeout_s, 1)
    _int_at_least("debug.fault_rank", cfg.debug.fault_rank, 0)
    if not str(cfg.results.dir).strip():
        raise ConfigError("results.dir is empty; give a folder, e.g. results.dir=./results")
    path = Path(cfg.results.dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"results.dir={cfg.results.dir!r} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"results.dir={cfg.results.dir!r} is not writable")
