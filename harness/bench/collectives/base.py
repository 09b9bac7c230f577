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
from harness.bench.base import Benchmark, BenchSpec, Case, Column, PlanEnv
from harness.devices import DTYPES
from harness.dist import Comm, DistContext
from harness.errors import ConfigError

DTYPE_CHOICES = ("float64", "float32", "bfloat16", "float16", "int32", "int64")
REDOPS = ("sum", "max", "min", "prod", "avg")
_TORCH_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "prod": "PRODUCT", "avg": "AVG"}


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

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[dict]:
        group_size = env.world_size // spec.groups if env.world_size else None
        if env.world_size and group_size and group_size < self.min_ranks:
            env.note(f"{self.name}: needs at least {self.min_ranks} ranks per group; skipped with {group_size}")
            return []
        if self.rooted and group_size is not None and spec.root >= group_size:
            raise ConfigError(f"bench.root={spec.root} but a group has {group_size} ranks; choose 0..{group_size - 1}")
        redops = spec.redops if self.reduces else (None,)
        for redop in redops:
            if redop == "avg":
                ints = [d for d in dtypes if not DTYPES[d][0].is_floating_point]
                if ints:
                    raise ConfigError(f"bench.redop=avg is not defined for {', '.join(ints)}; use a float dtype")
        modes = [m for m in self.modes if spec.in_place in ("both", m)]
        if not modes:
            env.note(f"{self.name}: has no {'in-place' if spec.in_place else 'out-of-place'} form in torch; skipped")
            return []
        env.require(3 * spec.max_bytes, f"bench.max_bytes={units.format_bytes(spec.max_bytes)}: {self.name}")
        cases = []
        for dtype in dtypes:
            size = DTYPES[dtype][1]
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
                        root = spec.root if self.rooted else None
                        cases.append({"op": self.name, "redop": redop, "root": root, "dtype": dtype,
                                      "bytes": count * size, "count": count, "in_place": in_place})  # fmt: skip
        return cases

    def build(self, case: dict, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Case:
        dtype = DTYPES[case["dtype"]][0]
        op_case = OpCase(case["count"], dtype, case["in_place"], case["redop"], case["root"] or 0, comm, ctx.device)
        if case["count"] % self.count_multiple(comm.size):
            raise ConfigError(f"{self.name}: count {case['count']} is not a multiple of the group size {comm.size}")
        buffers = self.build_op(op_case)

        def verify() -> dict:
            wrong = buffers.verify()
            return {"wrong": wrong, "passed": wrong == 0}

        def figures(seconds: float) -> dict:
            return {
                "algbw_gbps": units.algbw_gbps(case["bytes"], seconds),
                "busbw_gbps": units.busbw_gbps(self.name, case["bytes"], seconds, comm.size),
            }

        return Case(dict(case), buffers.run, verify, buffers.output, figures, buffers.prepare, buffers.reset)

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
