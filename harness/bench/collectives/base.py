"""The collective plug-in shared by every op (the nccl-tests split): sizes, dtypes, reduction
ops, roots, in-place and out-of-place, sub-communicators and the expected-data check live here;
each op's file supplies only its byte count, its buffers and expected data, its bus factor and
its call.

Expected data: rank r holds ((i + r) mod 3) − 1 at element i (`pattern`). Every element of
every dtype is exact, any run of consecutive ranks sums to −1, 0 or 1, and products and
extremes are −1, 0 or 1: sums, max, min and prod are exact in bf16 and integer types at any
world size, so the check demands equality. Only avg divides, and is compared within a few ulps.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from harness import units
from harness.bench.base import Benchmark, BenchSpec, CaseSpec, GateFigure, GateValue, PlanEnv, Runnable, Where
from harness.config.schema import BenchConfig
from harness.config.validate import as_list, int_at_least
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.dtypes import is_floating, itemsize, torch_dtype
from harness.errors import ConfigError, did_you_mean
from harness.results.kinds import Metric

DTYPE_CHOICES = ("float64", "float32", "bfloat16", "float16", "int32", "int64")
REDOPS = ("sum", "max", "min", "prod", "avg")
_TORCH_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "prod": "PRODUCT", "avg": "AVG"}


@dataclass(frozen=True)
class CollectiveOptions:
    """bench.redop, bench.root and bench.in_place, parsed (shared by every collective)."""

    redops: tuple[str, ...] = ("sum",)
    root: int = 0
    """Root's position in its communicator (rooted ops)."""
    in_place: bool | str = "both"
    """'both', True (in place only) or False (out of place only)."""


@dataclass(frozen=True)
class CollectiveCase(CaseSpec):
    op: str
    redop: str | None
    root: int | None
    bytes: int
    """S as nccl-tests counts it."""
    count: int
    in_place: bool


def parse_collective_options(bench: BenchConfig) -> CollectiveOptions:
    redops = as_list(bench.redop) or []
    for item in redops:
        if item not in REDOPS:
            raise ConfigError(f"bench.redop: unknown reduction {item!r}{did_you_mean(str(item), REDOPS)}; "
                              f"choices: {', '.join(REDOPS)}")  # fmt: skip
    if not redops:
        raise ConfigError(f"bench.redop is empty; choices: {', '.join(REDOPS)}")
    mode = str(bench.in_place).strip().lower()
    in_place: bool | str = {"both": "both", "true": True, "false": False}.get(mode, "?")
    if in_place == "?":
        raise ConfigError(f"bench.in_place={bench.in_place!r}; choices: both, true, false")
    return CollectiveOptions(tuple(redops), int_at_least("bench.root", bench.root, 0), in_place)


def torch_op(redop: str) -> Any:
    return getattr(dist.ReduceOp, _TORCH_OPS[redop])


def message_sizes(min_bytes: int, max_bytes: int, step_factor: int) -> list[int]:
    """min, min·f, min·f², ... while <= max (nccl-tests -b/-e/-f)."""
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= step_factor
    return sizes


def _periodic(period: list[int], count: int, start: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """count elements of a periodic sequence from position `start`, built in `dtype` (no int64
    temporary the size of the buffer: at multi-GB messages that would not fit)."""
    base = torch.tensor(period, dtype=dtype, device=device).roll(-(start % len(period)))
    return base.repeat(count // len(period) + 1)[:count].contiguous()


def pattern(count: int, rank: int, dtype: torch.dtype, device: torch.device, offset: int = 0) -> torch.Tensor:
    """Rank `rank`'s data for the reductions: ((offset + i + rank) mod 3) − 1 for i in 0..count−1."""
    return _periodic([-1, 0, 1], count, offset + rank, dtype, device)


IDENT_PERIOD = 251  # prime: a slice from the wrong rank or at the wrong offset cannot match


def ident_pattern(count: int, rank: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Rank `rank`'s data for the ops that move data without reducing it: values in −125..125
    (exact in bf16 and fp16) whose sequence starts at a rank-dependent phase, so that data from
    another rank, or shifted, differs unless the ranks are 251 apart."""
    phase = (rank * 131) % IDENT_PERIOD
    return _periodic([(j * 7) % IDENT_PERIOD - 125 for j in range(IDENT_PERIOD)], count, phase, dtype, device)


def reduced(redop: str, world_size: int) -> list[float]:
    """The reduction over ranks 0..n−1 of pattern()[i], for i mod 3 = 0, 1, 2 (exact integers;
    avg divides by n)."""
    out = []
    for j in range(3):
        values = [((j + r) % 3) - 1 for r in range(min(world_size, 3))]
        counts = [world_size // 3 + (1 if r < world_size % 3 else 0) for r in range(len(values))]
        if redop in ("sum", "avg"):
            total = sum(v * c for v, c in zip(values, counts, strict=True))
            out.append(total / world_size if redop == "avg" else total)
        elif redop == "max":
            out.append(max(values))
        elif redop == "min":
            out.append(min(values))
        else:  # prod
            prod = 1
            for v, c in zip(values, counts, strict=True):
                prod *= v**c
            out.append(prod)
    return out


CHUNK = 1 << 24  # elements compared at a time: bounded float64 temporaries


def count_wrong(got: torch.Tensor, expected: torch.Tensor | list[float], offset: int = 0, atol: float = 0.0) -> int:
    """Elements of `got` that differ from `expected` (a tensor, or the 3 residues of i+offset)
    by more than `atol`; NaN always counts."""
    wrong = 0
    for start in range(0, got.numel(), CHUNK):
        part = got[start : start + CHUNK].to(torch.float64)
        if isinstance(expected, torch.Tensor):
            want = expected[start : start + CHUNK].to(torch.float64)
        else:
            want = _periodic([float(v) for v in expected], part.numel(), start + offset, torch.float64, part.device)
        diff = (part - want).abs()
        wrong += int((diff > atol).sum()) + int(torch.isnan(part).sum())
    return wrong


def avg_tolerance(dtype: torch.dtype) -> float:
    """A few ulps at magnitude 1: avg divides by n, which no dtype represents exactly."""
    return 4 * torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


@dataclass(frozen=True)
class Reduction:
    """What a reducing op needs: torch's op, the expected residues, and the tolerance."""

    op: Any
    expected: list[float]
    atol: float

    @classmethod
    def of(cls, redop: str, world_size: int, dtype: torch.dtype) -> Reduction:
        return cls(torch_op(redop), reduced(redop, world_size), avg_tolerance(dtype) if redop == "avg" else 0.0)


@dataclass
class Buffers:
    """What an op's build returns: the call, the check, and the untimed helpers."""

    run: Callable[[], Any]
    verify: Callable[[], int]
    output: torch.Tensor
    prepare: Callable[[], Any] | None = None
    reset: Callable[[], Any] | None = None

    @classmethod
    def in_place_or_not(
        cls, run: Callable[[], Any], verify: Callable[[], int], out: torch.Tensor, inp: torch.Tensor, in_place: bool
    ) -> Buffers:
        """For torch's in-place-only ops (all_reduce, broadcast, reduce): in place, restore the
        input once before the check; out of place, refresh the output from the input before
        every call (untimed)."""
        if in_place:
            pristine = inp.clone()
            return cls(run, verify, out, reset=lambda: out.copy_(pristine))
        return cls(run, verify, out, prepare=lambda: out.copy_(inp))


@dataclass(frozen=True)
class OpCase:
    """Everything an op needs to build one case on one rank."""

    count: int
    """Elements of the buffer that S counts (nccl-tests' count column)."""
    dtype: torch.dtype
    in_place: bool
    redop: str | None
    root: int
    """Root's position in the communicator."""
    comm: Comm
    device: torch.device


class CollectiveBench(Benchmark):
    """A collective op; subclasses supply the op-specific parts."""

    collective = True
    identity = ("op", "dtype", "bytes", "in_place", "redop", "root", "world_size", "group_size", "group")
    metrics = (Metric("busbw_gbps", "GB/s"), Metric("algbw_gbps", "GB/s"),
               Metric("time_us", "us", higher_is_better=False))  # fmt: skip
    reduces = False
    rooted = False
    modes: tuple[bool, ...] = (False, True)
    """in_place values torch offers for this op."""
    min_ranks = 1
    keys = ("dtype", "min_bytes", "max_bytes", "step_factor", "in_place", "groups", "warmup", "iters")
    columns = (
        Column("bytes", "size (B)", "{:,}"),
        Column("count", "count", "{:,}"),
        Column("dtype", "type"),
        Column("redop", "redop"),
        Column("root", "root"),
        Column("in_place", "in-place"),
        Column("group", "group"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("algbw_gbps", "algbw (GB/s)", "{:.3f}"),
        Column("busbw_gbps", "busbw (GB/s)", "{:.3f}"),
        Column("wrong", "#wrong"),
    )

    @property
    def option_group(self) -> str:
        return "collectives"

    @property
    def gates(self) -> tuple[GateFigure, ...]:  # type: ignore[override]
        within = f"{self.name} within each node: bus bandwidth at the largest size"
        across = f"{self.name} over all nodes: bus bandwidth at the largest size"
        return (GateFigure(f"{self.name}_busbw_gbps", "GB/s", "node", datasheet="link_gbps_half", title=within),
                GateFigure(f"{self.name}_world_busbw_gbps", "GB/s", "cluster", title=across))  # fmt: skip

    def parse_options(self, bench: BenchConfig) -> CollectiveOptions:
        return parse_collective_options(bench)

    def count_multiple(self, group_size: int) -> int:
        """count must be a multiple of this (the ops that split a buffer per rank need the size)."""
        return 1

    @abstractmethod
    def build_op(self, case: OpCase) -> Buffers:
        """The buffers, call and check of one case."""

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return DTYPE_CHOICES

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float32",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[CollectiveCase]:
        options: CollectiveOptions = spec.options_of(self)
        group_size = env.world_size // spec.groups if env.world_size else None
        if env.world_size and group_size and group_size < self.min_ranks:
            env.note(f"{self.name}: needs at least {self.min_ranks} ranks per group; skipped with {group_size}")
            return []
        if self.rooted and group_size is not None and options.root >= group_size:
            raise ConfigError(f"bench.root={options.root} but a group has {group_size} ranks; "
                              f"choose 0..{group_size - 1}")  # fmt: skip
        redops = options.redops if self.reduces else (None,)
        for redop in redops:
            if redop == "avg":
                ints = [d for d in dtypes if not is_floating(d)]
                if ints:
                    raise ConfigError(f"bench.redop=avg is not defined for {', '.join(ints)}; use a float dtype")
        modes = [m for m in self.modes if options.in_place in ("both", m)]
        if not modes:
            env.note(f"{self.name}: has no {'in-place' if options.in_place else 'out-of-place'} form in torch; "
                     "skipped")  # fmt: skip
            return []
        env.require(3 * spec.max_bytes, f"bench.max_bytes={units.format_bytes(spec.max_bytes)} "
                                         f"({spec.max_bytes:,} bytes): {self.name}")  # fmt: skip
        cases = []
        for dtype in dtypes:
            size = itemsize(dtype)
            multiple = self.count_multiple(group_size or 1)
            for requested in message_sizes(spec.min_bytes, spec.max_bytes, spec.step_factor):
                count = requested // size // multiple * multiple
                if count == 0:
                    env.note(f"{self.name}: {requested} B is less than {multiple} x {size} B ({dtype}); skipped")
                    continue
                if count * size != requested:
                    env.note(
                        f"{self.name}: {requested} B rounded down to {count * size} B "
                        f"(a multiple of {multiple} rank(s) x {size} B {dtype})"
                    )
                for redop in redops:
                    for in_place in modes:
                        root = options.root if self.rooted else None
                        cases.append(CollectiveCase(dtype, self.name, redop, root, count * size, count, in_place))
        return cases

    def build(self, case: CollectiveCase, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        dtype = torch_dtype(case.dtype)
        op_case = OpCase(case.count, dtype, case.in_place, case.redop, case.root or 0, comm, ctx.device)
        if case.count % self.count_multiple(comm.size):
            raise ConfigError(f"{self.name}: count {case.count} is not a multiple of the group size {comm.size}")
        buffers = self.build_op(op_case)

        def verify() -> dict:
            wrong = buffers.verify()
            return {"wrong": wrong, "passed": wrong == 0}

        return Runnable(buffers.run, verify, buffers.output, buffers.prepare, buffers.reset)

    def figures(self, case: CollectiveCase, seconds: float, where: Where) -> dict[str, Any]:
        return {
            "algbw_gbps": units.algbw_gbps(case.bytes, seconds),
            "busbw_gbps": units.busbw_gbps(self.name, case.bytes, seconds, where.group_size),
        }

    def gate_values(self, rows: list[dict], scope: str) -> list[GateValue]:
        """Out-of-place busbw at the largest size: per group (scope node: one group per node, the
        group's first rank places it) or for the whole job (scope world)."""
        measured = [r for r in rows if not r.get("in_place") and r.get("busbw_gbps") is not None]
        if not measured:
            return []
        largest = max(r["bytes"] for r in measured)
        top = [r for r in measured if r["bytes"] == largest]
        node, world = self.gates
        if scope == "world":
            return [GateValue(world, world.name, max(r["busbw_gbps"] for r in top))]
        return [GateValue(node, node.name, r["busbw_gbps"], rank=r["group"] * r["group_size"]) for r in top]

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        """nccl-tests' footer: average busbw over all sizes, and the figure at the largest size."""
        good = [r for r in rows if r.get("busbw_gbps") is not None]
        if not good:
            return {}
        largest = max(r["bytes"] for r in good)
        at_largest = [r["busbw_gbps"] for r in good if r["bytes"] == largest]
        return {
            "avg_busbw_gbps": sum(r["busbw_gbps"] for r in good) / len(good),
            "busbw_gbps_at_max_bytes": max(at_largest),
            "max_bytes": largest,
            "wrong": sum(r["wrong"] for r in rows),
        }
