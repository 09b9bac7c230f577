"""What a benchmark plug-in supplies to the driver (the nccl-tests split: the driver owns sizes,
timing, checking, aggregation and output; a plug-in owns its options, its cases, its byte/FLOP
count, its expected data and its call).

A plug-in plans frozen cases (picklable, no closures), builds each on a rank into a `Runnable`
(the call, the check, the buffers: local to the rank), and turns a median time into figures.
It declares what its rows mean: their identity and metrics (`RowKind`, for comparing runs) and
the figures acceptance may gate on (`GateFigure`), so that no other module reads meaning back
from key names.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.config.schema import BenchConfig
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.errors import ConfigError
from harness.results.kinds import Metric, RowKind


@dataclass(frozen=True)
class BenchSpec:
    """The driver's options, validated and in plain units (nccl-tests' flags, from `bench.*`),
    and each plug-in's own parsed options (`options[plugin.option_group]`)."""

    dtypes: tuple[str, ...] | None
    """Explicit data types (canonical names), or None for each benchmark's default."""
    warmup: int
    """Untimed iterations per case."""
    iters: int
    """Timed iterations per case."""
    min_bytes: int
    """Smallest message, bytes."""
    max_bytes: int
    """Largest message, bytes."""
    step_factor: int
    """Multiplicative step between message sizes."""
    groups: int = 1
    """Equal sub-communicators the world is split into, run at the same time."""
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    """Each plug-in's parsed options, by its option group."""

    def options_of(self, bench: Benchmark) -> Any:
        """This plug-in's options (None when it has none)."""
        return self.options.get(bench.option_group)

    def with_options(self, group: str, options: Any) -> BenchSpec:
        """A copy with one plug-in's options replaced."""
        return dataclasses.replace(self, options={**self.options, group: options})


@dataclass
class PlanEnv:
    """What planning knows of where the cases will run (and the notes it collects)."""

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


@dataclass(frozen=True)
class CaseSpec:
    """One planned case (plug-ins subclass it with their fields): frozen, picklable, and the
    fields that name it in its row."""

    dtype: str

    def labels(self) -> dict[str, Any]:
        """The row fields that name the case."""
        return dataclasses.asdict(self)


@dataclass
class Runnable:
    """One case, allocated on a rank: the timed call and its untimed helpers (rank-local)."""

    run: Callable[[], Any]
    """The timed call."""
    verify: Callable[[], dict[str, Any]]
    """Checks `output` after one run; returns row fields including 'passed' (and 'wrong' for
    collectives, which the driver sums over ranks)."""
    output: Any
    """The result tensor `verify` reads (fault injection corrupts it)."""
    prepare: Callable[[], Any] | None = None
    """Untimed, before every run (e.g. refresh an out-of-place buffer)."""
    reset: Callable[[], Any] | None = None
    """Untimed, once before the checked run (restore the inputs)."""


@dataclass(frozen=True)
class Where:
    """Where a figure was measured: enough for a plug-in to turn a time into figures."""

    device_type: str
    device_name: str = ""
    group_size: int = 1


@dataclass(frozen=True)
class GateFigure:
    """A figure acceptance may gate on, as a plug-in declares it."""

    name: str
    """Metric name; '{dtype}' stands for the case's dtype (gemm_{dtype}_tflops)."""
    unit: str
    subject: str
    """gpu (one per rank) | node | cluster."""
    datasheet: str | None = None
    """What a profile's threshold is a fraction of: peak_tflops (of the dtype), memory_gbps,
    link_gbps_half; None: no datasheet figure (site references and peers only)."""
    higher_is_better: bool = True
    title: str = ""
    """What a plot of it is called, for people ('{dtype}' filled in)."""

    @property
    def threshold_key(self) -> str:
        """The hardware.thresholds key: the name without its unit."""
        return self.name.removesuffix("_tflops").removesuffix("_gbps")


@dataclass(frozen=True)
class GateValue:
    """One measured value of a declared gate figure."""

    figure: GateFigure
    metric: str
    """The figure's name with its placeholders filled (gemm_bfloat16_tflops)."""
    value: float
    rank: int | None = None
    """The rank measured (subject gpu), or the first rank of the node's group (subject node)."""
    host: str | None = None
    dtype: str | None = None


class Benchmark(ABC):
    """A benchmark plug-in."""

    name: str
    description: str
    collective: bool
    """True: all ranks take part in each call and a case gives one row per communicator.
    False: each rank measures its own device at the same time and gives its own row."""
    columns: tuple[Column, ...]
    keys: tuple[str, ...]
    """The bench.* keys this benchmark reads (for --help)."""
    identity: tuple[str, ...] = ()
    """Row fields that say what a row measured (matched across runs by `harness results compare`)."""
    metrics: tuple[Metric, ...] = ()
    """Row figures with their direction."""
    gates: tuple[GateFigure, ...] = ()
    """Figures acceptance may gate on."""
    best_of: tuple[str, ...] = ()
    """Figures also reported from the fastest iteration as <name>_best (STREAM and HPC Challenge
    report the best of N; the median is the harness's figure)."""

    @property
    def option_group(self) -> str:
        """Plug-ins that share options (the collectives) share a group."""
        return self.name

    def parse_options(self, bench: BenchConfig) -> Any:
        """This plug-in's options from `bench.*`, checked (ConfigError); None when it has none."""
        return None

    @abstractmethod
    def dtypes(self, device_type: str) -> tuple[str, ...]:
        """Data types this benchmark can run on this kind of device."""

    @abstractmethod
    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        """Data types run when the user names none."""

    @abstractmethod
    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[CaseSpec]:
        """The cases to measure; raises ConfigError for sizes that cannot run."""

    @abstractmethod
    def build(self, case: Any, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        """Allocate and initialise one case on this rank (`comm`: this rank's communicator)."""

    @abstractmethod
    def figures(self, case: Any, seconds: float, where: Where) -> dict[str, Any]:
        """Performance figures of a case from its median time in seconds (tflops, busbw_gbps...)."""

    def derive(self, row: Mapping[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
        """Figures that span cases (a speedup over an earlier case), from this run's earlier rows
        of this benchmark; computed by the driver on rank 0 when the row is formed."""
        return {}

    def skipped_note(self, dtype: str, device_type: str) -> str:
        """Why a dtype of the default list does not run on this device."""
        return f"{self.name}: skipping {dtype} (not available on {device_type})"

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        """Headline figures over all rows (for the summary line and the manifest)."""
        return {}

    def gate_values(self, rows: list[dict], scope: str) -> list[GateValue]:
        """The declared gate figures measured in these rows (`scope`: the acceptance stage)."""
        return []

    def row_kind(self) -> RowKind:
        """What this benchmark's rows are, for comparing runs."""
        return RowKind(self.name, self.identity, self.metrics)
