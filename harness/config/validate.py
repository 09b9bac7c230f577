"""Checks that need meaning, not just types: sizes, ranges, choices. Each raises ConfigError with
one line naming the key, the bad value and what is valid."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

from harness import units
from harness.bench.base import BenchSpec
from harness.config.compose import group_options
from harness.config.schema import BenchConfig, RunConfig
from harness.devices import DTYPES, gpu_count
from harness.errors import ConfigError

FAULTS = ("none", "wrong_result", "raise", "hang")
_SHAPE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def as_list(value: Any) -> list[Any] | None:
    """A config value as a list (a scalar becomes one item); None stays None."""
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


def _positive_size(key: str, value: Any) -> int | None:
    if value is None:
        return None
    size = _size(key, value)
    if size < 1:
        raise ConfigError(f"{key}={value!r} must be at least 1 byte (or null for the default)")
    return size


def _shapes(value: Any, key: str = "bench.shapes") -> tuple[tuple[int, int, int], ...] | None:
    items = as_list(value)
    if items is None:
        return None
    shapes = []
    for item in items:
        match = _SHAPE.match(str(item))
        dims = tuple(int(g) for g in match.groups()) if match else ()
        if not match or min(dims) < 1:
            raise ConfigError(f"{key}: {item!r} is not a shape; use MxNxK with positive sizes, e.g. 4096x4096x4096")
        shapes.append(dims)
    if not shapes:
        raise ConfigError(f"{key} is empty; give at least one MxNxK or null for the default")
    return tuple(shapes)  # type: ignore[return-value]


def parse_shapes(key: str, value: Any) -> tuple[tuple[int, int, int], ...] | None:
    """Matmul shapes 'MxNxK' (a string or a list of them); ConfigError naming `key`."""
    return _shapes(value, key)


def _sizes(key: str, value: Any) -> list[int] | None:
    """A list of positive ints, or 'start:stop:step' (stop included, as mamf-finder's ranges)."""
    if value is None:
        return None
    if isinstance(value, str) and ":" in value:
        parts = value.split(":")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts) or int(parts[2]) < 1 or int(parts[0]) < 1:
            raise ConfigError(f"{key}={value!r}: use start:stop:step with positive whole numbers, e.g. 1024:8192:1024")
        start, stop, step = (int(p) for p in parts)
        if stop < start:
            raise ConfigError(f"{key}={value!r}: stop is smaller than start")
        return list(range(start, stop + 1, step))
    items = as_list(value) or []
    out = []
    for item in items:
        if isinstance(item, bool) or not str(item).strip().isdigit() or int(item) < 1:
            raise ConfigError(f"{key}: {item!r} is not a positive whole number")
        out.append(int(item))
    if not out:
        raise ConfigError(f"{key} is empty")
    return out


def _grid(bench: BenchConfig) -> list[tuple[int, int, int]]:
    dims = {key: _sizes(f"bench.{key}", getattr(bench, key)) for key in ("m", "n", "k")}
    given = [key for key, sizes in dims.items() if sizes is not None]
    if not given:
        return []
    if len(given) != 3:
        missing = [key for key in dims if key not in given]
        raise ConfigError(f"bench.m, bench.n and bench.k make a grid together; also give {', '.join(missing)}")
    return list(itertools.product(dims["m"], dims["n"], dims["k"]))


def _redops(value: Any) -> tuple[str, ...]:
    from harness.bench.collectives.base import REDOPS

    items = as_list(value) or []
    for item in items:
        if item not in REDOPS:
            raise ConfigError(f"bench.redop: unknown reduction {item!r}; choices: {', '.join(REDOPS)}")
    if not items:
        raise ConfigError(f"bench.redop is empty; choices: {', '.join(REDOPS)}")
    return tuple(items)


def _in_place(value: Any) -> bool | str:
    if value in ("both", True, False):
        return value
    raise ConfigError(f"bench.in_place={value!r}; choices: both, true, false")


def bench_spec(bench: BenchConfig, seed: int) -> BenchSpec:
    """The driver's options from `bench.*`, checked."""
    dtypes = as_list(bench.dtype)
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
        shapes=_all_shapes(bench),
        seed=seed,
        redops=_redops(bench.redop),
        root=_int_at_least("bench.root", bench.root, 0),
        groups=_int_at_least("bench.groups", bench.groups, 1),
        in_place=_in_place(bench.in_place),
        array_bytes=_positive_size("bench.array_bytes", bench.array_bytes),
        hpl_n=tuple(_sizes("bench.hpl_n", bench.hpl_n)) if bench.hpl_n is not None else None,
        **_kernel_options(bench),
    )


def _choices(key: str, value: Any, choices: tuple[str, ...] | list[str]) -> tuple[str, ...] | None:
    items = as_list(value)
    if items is None:
        return None
    if not items:
        raise ConfigError(f"{key} is empty; choices: {', '.join(choices)} (or null for the default)")
    for item in items:
        if item not in choices:
            raise ConfigError(f"{key}: unknown {item!r}; choices: {', '.join(choices)}")
    return tuple(dict.fromkeys(items))


def _kernel_options(bench: BenchConfig) -> dict[str, Any]:
    from harness.bench.kernel_ops import IMPLS, OPS

    tokens = bench.kernel_tokens
    return {
        "kernel_ops": _choices("bench.kernel_ops", bench.kernel_ops, OPS),
        "kernel_impls": _choices("bench.kernel_impls", bench.kernel_impls, IMPLS),
        "kernel_models": _choices("bench.kernel_models", bench.kernel_models, group_options("model")),
        "kernel_tokens": None if tokens is None else _int_at_least("bench.kernel_tokens", tokens, 1),
        "kernel_timing": _choices("bench.kernel_timing", bench.kernel_timing, ("launch", "graph"))[0],
    }


def _all_shapes(bench: BenchConfig) -> tuple[tuple[int, int, int], ...] | None:
    shapes = list(_shapes(bench.shapes) or ()) + _grid(bench)
    return tuple(dict.fromkeys(shapes)) or None


def resolve_nproc(value: Any, device_type: str, *, dry_run: bool = False) -> int:
    """launch.nproc: 'auto' is one rank per GPU, or 2 on a CPU-only machine. A dry run plans
    for any number of ranks, whatever this machine has."""
    if value == "auto":
        return gpu_count() if device_type == "cuda" else 2
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"launch.nproc={value!r} must be 'auto' or a whole number >= 1")
    if device_type == "cuda" and value > gpu_count() and not dry_run:
        raise ConfigError(f"launch.nproc={value} but this machine has {gpu_count()} GPU(s); choose 1..{gpu_count()}")
    return value


def validate_common(cfg: RunConfig) -> None:
    """Checks that apply to every task."""
    if cfg.debug.fault not in FAULTS:
        raise ConfigError(f"debug.fault={cfg.debug.fault!r}; choices: {', '.join(FAULTS)}")
    _int_at_least("launch.timeout_s", cfg.launch.timeout_s, 1)
    if cfg.launch.bootstrap not in ("auto", "mpi"):
        raise ConfigError(f"launch.bootstrap={cfg.launch.bootstrap!r}; choices: auto, mpi")
    _int_at_least("telemetry.interval_ms", cfg.telemetry.interval_ms, 1)
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**31:
        raise ConfigError(f"seed={cfg.seed!r} must be a whole number from 0 to 2^31 - 1")
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


def validate_faults(cfg: RunConfig, world: int | None) -> None:
    """fault.*: ranks inside the job (when its size is known) and a slow-down of at least 1."""
    f = cfg.fault
    for key in ("slow_rank", "corrupt_rank"):
        value = getattr(f, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"fault.{key}={value!r} must be a rank (a whole number >= 0) or null")
        if world and value >= world:
            raise ConfigError(f"fault.{key}={value} but the job has {world} ranks; choose 0..{world - 1}")
    if isinstance(f.slow_factor, bool) or not isinstance(f.slow_factor, int | float) or f.slow_factor < 1:
        raise ConfigError(f"fault.slow_factor={f.slow_factor!r} must be a number >= 1")


def validate_accept(cfg: RunConfig) -> None:
    """accept.*: dtypes, shapes, sizes and the outlier rule's numbers."""
    a = cfg.accept
    _choices("accept.gemm_dtypes", a.gemm_dtypes, tuple(DTYPES))
    if a.gemm_shapes is not None:
        _shapes(a.gemm_shapes, "accept.gemm_shapes")
    if a.comm_bytes is not None and _size("accept.comm_bytes", a.comm_bytes) < 1024:
        raise ConfigError(f"accept.comm_bytes={a.comm_bytes} must be at least 1K")
    for key in ("outlier_mad", "outlier_min_rel"):
        value = getattr(a, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"accept.{key}={value!r} must be a number >= 0")
    for key in ("gpus_per_node", "cores_per_node"):
        if getattr(a, key) is not None:
            _int_at_least(f"accept.{key}", getattr(a, key), 1)
