"""What a benchmark plug-in supplies to the driver (the nccl-tests split: the driver owns sizes,
timing, checking, aggregation and output; a plug-in owns its byte/FLOP count, its expected data
and its call)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.dist import Comm, DistContext
from harness.errors import ConfigError


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
    """Matmul shapes (m, n, k): bench.shapes plus the bench.m × bench.n × bench.k grid; None for
    the device's default."""
    seed: int = 0
    redops: tuple[str, ...] = ("sum",)
    """Reduction ops of the reducing collectives."""
    root: int = 0
    """Root of rooted collectives (position within the communicator)."""
    groups: int = 1
    """Equal sub-communicators the world is split into, run at the same time."""
    in_place: bool | str = "both"
    """Collective modes: 'both', True (in place only) or False (out of place only)."""
    array_bytes: int | None = None
    """Bytes per array of the memory benchmark; None: the device's default."""
    hpl_n: tuple[int, ...] | None = None
    """Orders of the HPL solves; None: the device's default."""
    kernel_ops: tuple[str, ...] | None = None
    """Ops of the kernels benchmark; None: all."""
    kernel_impls: tuple[str, ...] | None = None
    """eager, compile, fused; None: all that apply on the device."""
    kernel_models: tuple[str, ...] | None = None
    """Model presets giving the kernels' sizes; None: the device's default."""
    kernel_tokens: int | None = None
    """Tokens per kernel call; None: the device's default."""
    kernel_timing: str = "launch"
    """launch (calls issued from Python) or graph (CUDA graph replay)."""


@dataclass
class PlanEnv:
    """What planning knows of where the cases will run."""

    device_type: str
    free_memory_bytes: int
    """Memory free on one device (on CPU: the host's available memory)."""
    world_size: int | None = None
    """Ranks of the job when known (None: decided by the launcher at run time)."""
    ranks_per_host: int = 1
    """Ranks sharing one host's memory (CPU ranks share the host's RAM)."""
    nodes: int | None = None
    """Nodes of the job when known (ranks are placed node by node, as srun and torchrun do)."""
    device_name: str = ""
    notes: list[str] = field(default_factory=list)

    def require(self, need_bytes: int, what: str) -> None:
        """Refuse, before anything runs, a case that would not fit: `need_bytes` per rank, times
        the ranks sharing this memory, against 90 % of what is free (the rest for the runtime)."""
        need = need_bytes * self.ranks_per_host
        if need > 0.9 * self.free_memory_bytes:
            free = self.free_memory_bytes / 2**30
            raise ConfigError(f"{what} needs {need / 2**30:.1f} GiB on each device but {free:.1f} GiB is free")

    def note(self, message: str) -> None:
        """Something the user should know about the plan (a rounded size, a skipped dtype)."""
        if message not in self.notes:
            self.notes.append(message)


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
    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[dict]:
        """The cases to measure, as plain dicts; raises ConfigError for sizes that cannot run."""

    @abstractmethod
    def build(self, case: dict, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Case:
        """Allocate and initialise one case on this rank (`comm`: this rank's communicator)."""

    def skipped_note(self, dtype: str, device_type: str) -> str:
        """Why a dtype of the default list does not run on this device."""
        return f"{self.name}: skipping {dtype} (not available on {device_type})"

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        """Headline figures over all rows (for the summary line and the manifest)."""
        return {}
