"""The one benchmark driver: plans cases, times them, checks them, aggregates across ranks,
shows progress and hands rows to the run record. Plug-ins only build cases (see base.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness import dist
from harness.bench import get
from harness.bench.base import Benchmark, BenchSpec
from harness.bench.timing import measure, synchronize
from harness.errors import ConfigError


@dataclass
class SuitePlan:
    """What a `harness bench` run will measure: plug-ins with their cases, in order."""

    spec: BenchSpec
    items: list[tuple[Benchmark, list[dict]]]

    @property
    def total(self) -> int:
        return sum(len(cases) for _, cases in self.items)


@dataclass
class SuiteResult:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: int = 0
    total: int = 0


def plan_suite(names: list[str], spec: BenchSpec, device_type: str, memory_bytes: int) -> SuitePlan:
    """Resolve names and dtypes and enumerate every case; ConfigError for anything that cannot run."""
    if not names:
        raise ConfigError("no benchmark named; usage: harness bench NAME[,NAME...], e.g. harness bench gemm")
    items = []
    for name in names:
        bench = get(name)
        if spec.dtypes is None:
            dtypes = bench.default_dtypes(device_type)
        else:
            allowed = bench.dtypes(device_type)
            for dtype in spec.dtypes:
                if dtype not in allowed:
                    raise ConfigError(
                        f"bench.dtype: {dtype!r} is not available for {name} on {device_type}; "
                        f"choices: {', '.join(allowed)}"
                    )
            dtypes = spec.dtypes
        items.append((bench, bench.plan(spec, dtypes, device_type, memory_bytes)))
    return SuitePlan(spec, items)


@dataclass(frozen=True)
class Fault:
    """Injected fault (debug.fault) and the rank it hits."""

    kind: str = "none"
    rank: int = 0


def _inject_before(fault: Fault, ctx: dist.DistContext) -> None:
    if fault.rank != ctx.rank:
        return
    if fault.kind == "raise":
        raise RuntimeError(f"injected fault (debug.fault=raise) on rank {ctx.rank}")
    if fault.kind == "hang":
        while True:  # until a signal or the launcher ends this rank
            time.sleep(1)


def _measure_case(bench: Benchmark, case_spec: dict, ctx: dist.DistContext, spec: BenchSpec, corrupt: bool) -> dict:
    """Check once, then time; returns this rank's row (before aggregation)."""
    case = bench.build(case_spec, ctx, spec)
    if case.reset:
        case.reset()
    if case.prepare:
        case.prepare()
    case.run()
    synchronize(ctx.device)
    if corrupt:
        flat = case.output.view(-1)
        flat[0] = flat[0] + 1000
    check = case.verify()
    timing = measure(case.run, device=ctx.device, warmup=spec.warmup, iters=spec.iters, prepare=case.prepare)
    return {"labels": case.labels, "check": check, "timing": timing, "figures": case.figures}


def _collective_row(ctx: dist.DistContext, name: str, measured: dict) -> dict:
    """One row for the world: median per rank, then the slowest rank's median (as nccl-tests)."""
    timing = measured["timing"]
    per_rank = dist.all_gather_floats(ctx, [timing.median])
    medians = [values[0] for values in per_rank]
    wrong = dist.all_sum_int(ctx, int(measured["check"]["wrong"]))
    slowest = max(range(len(medians)), key=medians.__getitem__)
    return {
        "bench": name,
        **measured["labels"],
        "time_us": medians[slowest] * 1e6,
        "time_us_min": min(medians) * 1e6,
        "time_us_max": medians[slowest] * 1e6,
        "slowest_rank": slowest,
        **measured["figures"](medians[slowest]),
        "wrong": wrong,
        "passed": wrong == 0,
        "world_size": ctx.world_size,
    }


def _rank_row(ctx: dist.DistContext, name: str, measured: dict) -> dict:
    timing = measured["timing"]
    return {
        "bench": name,
        **measured["labels"],
        "rank": ctx.rank,
        "local_rank": ctx.launch.local_rank,
        "host": socket.gethostname(),
        "world_size": ctx.world_size,
        "time_us": timing.median * 1e6,
        "time_us_min": timing.min * 1e6,
        "time_us_max": timing.max * 1e6,
        **measured["figures"](timing.median),
        **measured["check"],
    }


def run_suite(
    plan: SuitePlan,
    ctx: dist.DistContext,
    *,
    fault: Fault = Fault(),
    on_rows: Callable[[Benchmark, list[dict]], None] | None = None,
    on_progress: Callable[[int, int, Benchmark, list[dict]], None] | None = None,
) -> SuiteResult:
    """Measure every case of the plan on every rank; rank 0 receives the rows."""
    result = SuiteResult(total=0)
    done = 0
    _inject_before(fault, ctx)
    for bench, cases in plan.items:
        for case_spec in cases:
            corrupt = fault.kind == "wrong_result" and fault.rank == ctx.rank and done == 0
            measured = _measure_case(bench, case_spec, ctx, plan.spec, corrupt)
            if bench.collective:
                row = _collective_row(ctx, bench.name, measured)
                rows = [row] if ctx.is_root else []
            else:
                rows = dist.gather_objects(ctx, _rank_row(ctx, bench.name, measured)) or []
            done += 1
            if ctx.is_root:
                result.rows.setdefault(bench.name, []).extend(rows)
                result.total += len(rows)
                result.failed += sum(1 for r in rows if not r["passed"])
                if on_rows:
                    on_rows(bench, rows)
                if on_progress:
                    on_progress(done, plan.total, bench, rows)
            del measured
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    return result
