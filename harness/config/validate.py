"""Checks that need meaning, not just types: sizes, ranges, choices. Each raises ConfigError with
one line naming the key, the bad value and what is valid. Plug-ins and tasks build their own
checks from the helpers here; `validate_common` holds the ones every task shares.

Nothing here creates anything: checking that `results.dir` can be written looks at the folder
(or the nearest folder above it that exists) and leaves the disk as it was.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from harness import units
from harness.config.schema import RunConfig
from harness.errors import ConfigError, did_you_mean

FAULTS = ("none", "wrong_result", "raise", "hang")
MAX_TIMEOUT_S = 86_400
"""launch.timeout_s at most a day: a collective that waits longer is a hang, and larger values
overflow the process group's timer."""
_SHAPE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def as_list(value: Any) -> list[Any] | None:
    """A config value as a list (a scalar becomes one item); None stays None."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def int_at_least(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum]; ConfigError naming the key otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum:,}"
        raise ConfigError(f"{key}={value!r} must be a whole number {bound}")
    return value


def number_at_least(key: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be a number >= {minimum:g}")
    return float(value)


def size(key: str, value: Any) -> int:
    """Bytes of a size value ('64M' = 64 x 2^20); ConfigError naming the key otherwise."""
    try:
        return units.parse_bytes(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def positive_size(key: str, value: Any) -> int | None:
    """A size of at least one byte, or None for null."""
    if value is None:
        return None
    nbytes = size(key, value)
    if nbytes < 1:
        raise ConfigError(f"{key}={value} must be at least 1 byte (or null for the default)")
    return nbytes


def shapes(key: str, value: Any) -> tuple[tuple[int, int, int], ...] | None:
    """Matmul shapes 'MxNxK' (a string or a list of them); None for null."""
    items = as_list(value)
    if items is None:
        return None
    out = []
    for item in items:
        match = _SHAPE.match(str(item))
        dims = tuple(int(g) for g in match.groups()) if match else ()
        if not match or min(dims) < 1:
            raise ConfigError(f"{key}: {item!r} is not a shape; use MxNxK with positive sizes, e.g. 4096x4096x4096")
        out.append(dims)
    if not out:
        raise ConfigError(f"{key} is empty; give at least one MxNxK or null for the default")
    return tuple(out)  # type: ignore[return-value]


def sizes(key: str, value: Any) -> list[int] | None:
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


def choices(key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> tuple[str, ...] | None:
    """One or more of `allowed` (duplicates dropped, order kept); None for null."""
    items = as_list(value)
    if items is None:
        return None
    if not items:
        raise ConfigError(f"{key} is empty; choices: {', '.join(allowed)} (or null for the default)")
    for item in items:
        if item not in allowed:
            raise ConfigError(
                f"{key}: unknown {item!r}{did_you_mean(str(item), allowed)}; choices: {', '.join(allowed)}"
            )
    return tuple(dict.fromkeys(items))


def writable_folder(key: str, value: str) -> Path:
    """A folder that exists and is writable, or that could be made: the nearest folder above it
    that exists must be writable. Creates nothing."""
    if not str(value).strip():
        raise ConfigError(f"{key} is empty; give a folder, e.g. {key}=./results")
    path = Path(value)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path and not path.is_dir():
        raise ConfigError(f"{key}={value!r} is a file, not a folder")
    if not probe.is_dir():
        raise ConfigError(f"{key}={value!r} cannot be created: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={value!r} is not writable" if probe == path else
                          f"{key}={value!r} cannot be created: {probe} is not writable")  # fmt: skip
    return path


def validate_common(cfg: RunConfig) -> None:
    """Checks that apply to every task."""
    if cfg.debug.fault not in FAULTS:
        raise ConfigError(f"debug.fault={cfg.debug.fault!r}{did_you_mean(cfg.debug.fault, FAULTS)}; "
                          f"choices: {', '.join(FAULTS)}")  # fmt: skip
    int_at_least("launch.timeout_s", cfg.launch.timeout_s, 1, MAX_TIMEOUT_S)
    int_at_least("launch.grace_s", cfg.launch.grace_s, 0, 600)
    if cfg.launch.bootstrap not in ("auto", "mpi"):
        raise ConfigError(f"launch.bootstrap={cfg.launch.bootstrap!r}; choices: auto, mpi")
    int_at_least("telemetry.interval_ms", cfg.telemetry.interval_ms, 1)
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**31:
        raise ConfigError(f"seed={cfg.seed!r} must be a whole number from 0 to 2^31 - 1")
    int_at_least("debug.fault_rank", cfg.debug.fault_rank, 0)
    writable_folder("results.dir", cfg.results.dir)
    if cfg.results.run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", cfg.results.run_id):
        raise ConfigError(
            f"results.run_id={cfg.results.run_id!r} is not a folder name (letters, digits, '.', '_', '-')"
        )


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
    number_at_least("fault.slow_factor", f.slow_factor, 1)
