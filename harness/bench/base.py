"""What a benchmark plug-in supplies to the driver (the nccl-tests split: the driver owns sizes,
timing, checking, aggregation and output; a plug-in owns its byte/FLOP count, its expected data
and its call)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.dist import DistContext


@dataclass(frozen=True)
class BenchSpec:
    """The driver's options, validated and in plain units (from `bench.*` of the config)."""

    dtypes: tuple[str, ...] | None
    """Explicit data types, or None for each benchmark's default."""
    warmup: int
    iters: int
    min_bytes: int
    max_bytes: int
    step_factor: int
    shapes: tuple[tuple[int, int, int], ...] | None
    """Matmul shapes (m, n, k), or None for the device's default."""
    seed: int = 0


@dataclass
class Case:
    """One measured configuration, allocated on a rank."""

    labels: dict[str, Any]
    """Row fields that name the case (dtype, sizes, in_place...)."""
    run: Callable[[], Any]
    """The timed call."""
    verify: Callable[[], dict[str, Any]]
    """Checks `output` after one run; returns row fields including 'passed' (and 'wrong' for
    collectives, which the driver sums over ranks)."""
    output: torch.Tensor
    """The result tensor `verify` reads (fault injection corrupts it)."""
    figures: Callable[[float], dict[str, float]]
    """Median seconds -> performance figures (tflops, algbw_gbps, ...)."""
    prepare: Callable[[], Any] | None = None
    """Untimed, before every run (e.g. refresh an out-of-place buffer)."""
    reset: Callable[[], Any] | None = None
    """Untimed, once before the checked run (restore the inputs)."""


@dataclass(frozen=True)
class Column:
    """A column of the printed table: row key, header, format."""

    key: str
    header: str
    fmt: str = "{}"


class Benchmark(ABC):
    """A benchmark plug-in."""

    name: str
    description: str
    collective: bool
    """True: all ranks take part in each call and a case gives one row for the world.
    False: each rank measures its own device at the same time and gives its own row."""
    columns: tuple[Column, ...]
    keys: tuple[str, ...]
    """The bench.* keys this benchmark reads (for --help)."""

    @abstractmethod
    def dtypes(self, device_type: str) -> tuple[str, ...]:
        """Data types this benchmark can run on this kind of device."""

    @abstractmethod
    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        """Data types run when the user names none."""

    @abstractmethod
    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], device_type: str, memory_bytes: int) -> list[dict]:
        """The cases to measure, as plain dicts; raises ConfigError for sizes that cannot run."""

    @abstractmethod
    def build(self, case: dict, ctx: DistContext, spec: BenchSpec) -> Case:
        """Allocate and initialise one case on this rank."""
