"""The one benchmark driver: plans cases, times them, checks them, samples telemetry beside
them, aggregates across ranks and groups, shows progress and hands rows to the run record.
Plug-ins only plan and build cases (see base.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness import dist, telemetry
from harness.bench import expand, get
from harness.bench.base import Benchmark, BenchSpec, PlanEnv
from harness.bench.timing import measure, synchronize
from harness.errors import ConfigError


@dataclass
class SuitePlan:
    """What a `harness bench` run will measure: plug-ins with their cases, in order."""

    spec: BenchSpec
    items: list[tuple[Benchmark, list[dict]]]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(cases) for _, cases in self.items)


@dataclass
class SuiteResult:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: int = 0
    total: int = 0


def plan_suite(names: list[str], spec: BenchSpec, env: PlanEnv) -> SuitePlan:
    """Resolve names and dtypes and enumerate every case; ConfigError for anything that cannot run."""
    if not names:
        raise ConfigError("no benchmark named; usage: harness bench NAME[,NAME...], e.g. harness bench gemm")
    if env.world_size and env.world_size % spec.groups:
        raise ConfigError(
            f"bench.groups={spec.groups} does not divide the world size {env.world_size}; "
            f"choose one of {', '.join(str(g) for g in range(1, env.world_size + 1) if env.world_size % g == 0)}"
        )
    items = []
    for name in expand(names):
        bench = get(name)
        allowed = bench.dtypes(env.device_type)
        if spec.dtypes is None:
            dtypes = tuple(d for d in bench.default_dtypes(env.device_type) if d in allowed)
            for dtype in bench.default_dtypes(env.device_type):
                if dtype not in allowed:
                    env.note(bench.skipped_note(dtype, env.device_type))
        else:
            dtypes = tuple(d for d in spec.dtypes if d in allowed)
            refused = [d for d in spec.dtypes if d not in allowed]
            if refused and (len(names) == 1 or not dtypes):
                raise ConfigError(
                    f"bench.dtype: {refused[0]!r} is not available for {name} on {env.device_type}; "
                    f"choices: {', '.join(allowed)}"
                )
            for dtype in refused:  # a suite: other benchmarks take this dtype
                env.note(f"{name}: {dtype} does not apply; skipped")
        items.append((bench, bench.plan(spec, dtypes, env)))
    if not any(cases for _, cases in items):
        raise ConfigError(f"nothing to measure: {'; '.join(env.notes) or 'no case in the plan'}")
    return SuitePlan(spec, items, env.notes)


@dataclass(frozen=True)
class Fault:
    """Injected fault (debug.fault, or fault.corrupt_rank as wrong_result) and the rank it hits;
    fault.slow_rank makes one rank slow inside its timed region."""

    kind: str = "none"
    rank: int = 0
    slow_rank: int | None = None
    slow_factor: float = 3.0


def _slowed(run: Callable[[], Any], device: torch.device, factor: float) -> Callable[[], Any]:
    """`run`, then a sleep of (factor - 1) x its own time, inside the timed window (on a GPU the
    end event is recorded after the sleep, so device timing sees the delay too)."""

    def slow() -> None:
        t0 = time.perf_counter()
        run()
        synchronize(device)
        time.sleep((time.perf_counter() - t0) * (factor - 1))

    return slow


def _inject_before(fault: Fault, ctx: dist.DistContext) -> None:
    if fault.rank != ctx.rank:
        return
    if fault.kind == "raise":
        raise RuntimeError(f"injected fault (debug.fault=raise) on rank {ctx.rank}")
    if fault.kind == "hang":
        while True:  # until a signal or the launcher ends this rank
            time.sleep(1)


@dataclass(frozen=True)
class Telemetry:
    """Sampling settings and this rank's source (None: off)."""

    source: telemetry.Source | None = None
    interval_s: float = 0.1


def _measure_case(
    bench: Benchmark, case_spec: dict, ctx: dist.DistContext, spec: BenchSpec, comm: dist.Comm, corrupt: bool,
    tele: Telemetry, fault: Fault = Fault(),
) -> dict[str, Any]:  # fmt: skip
    """Check once, then time with telemetry; returns this rank's measurement."""
    case = bench.build(case_spec, ctx, spec, comm)
    if fault.slow_rank == ctx.rank:
        case.run = _slowed(case.run, ctx.device, fault.slow_factor)
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
    sampler = telemetry.Sampler(tele.source, tele.interval_s) if tele.source else None
    if sampler:
        sampler.start()
    timing = measure(case.run, device=ctx.device, warmup=spec.warmup, iters=spec.iters, prepare=case.prepare)
    summary = sampler.stop() if sampler else {}
    return {
        "labels": case.labels,
        "check": check,
        "median": timing.median,
        "min": timing.min,
        "max": timing.max,
        "figures": case.figures(timing.median),
        "figures_fn": case.figures,
        "telemetry": summary,
        "rank": ctx.rank,
        "local_rank": ctx.launch.local_rank,
        "host": dist.host_name(),
        "group": comm.index,
    }


def _rank_row(name: str, m: dict, world_size: int) -> dict:
    return {
        "bench": name,
        **m["labels"],
        "rank": m["rank"],
        "local_rank": m["local_rank"],
        "host": m["host"],
        "world_size": world_size,
        "time_us": m["median"] * 1e6,
        "time_us_min": m["min"] * 1e6,
        "time_us_max": m["max"] * 1e6,
        **m["figures"],
        **m["check"],
        **m["telemetry"],
    }


def _group_rows(name: str, measured: list[dict], figures_fn: Callable, world_size: int) -> list[dict]:
    """One row per communicator: each rank's median, then the slowest rank's (as nccl-tests)."""
    rows = []
    for group in sorted({m["group"] for m in measured}):
        members = [m for m in measured if m["group"] == group]
        slowest = max(members, key=lambda m: m["median"])
        wrong = sum(int(m["check"]["wrong"]) for m in members)
        rows.append({
            "bench": name,
            **members[0]["labels"],
            "group": group,
            "group_size": len(members),
            "world_size": world_size,
            "time_us": slowest["median"] * 1e6,
            "time_us_min": min(m["median"] for m in members) * 1e6,
            "time_us_max": slowest["median"] * 1e6,
            "slowest_rank": slowest["rank"],
            **figures_fn(slowest["median"]),
            "wrong": wrong,
            "wrong_ranks": [m["rank"] for m in members if m["check"]["wrong"]],
            "passed": wrong == 0,
            **telemetry.merge([m["telemetry"] for m in members]),
        })  # fmt: skip
    return rows


def run_suite(
    plan: SuitePlan,
    ctx: dist.DistContext,
    *,
    fault: Fault = Fault(),
    tele: Telemetry = Telemetry(),
    on_rows: Callable[[Benchmark, list[dict]], None] | None = None,
    on_progress: Callable[[int, int, Benchmark, list[dict]], None] | None = None,
) -> SuiteResult:
    """Measure every case of the plan on every rank; rank 0 receives the rows."""
    result = SuiteResult()
    done = 0
    _inject_before(fault, ctx)
    for bench, cases in plan.items:
        comm = dist.split(ctx, plan.spec.groups) if bench.collective else dist.split(ctx, 1)
        for case_spec in cases:
            corrupt = fault.kind == "wrong_result" and fault.rank == ctx.rank and done == 0
            mine = _measure_case(bench, case_spec, ctx, plan.spec, comm, corrupt, tele, fault)
            figures_fn = mine.pop("figures_fn")  # a closure: not sent between ranks
            measured = dist.gather_objects(ctx, mine)
            done += 1
            if ctx.is_root and measured:
                if bench.collective:
                    # Each group's figures come from its own slowest rank; rank 0's figures_fn
                    # computes bandwidths from bytes and the group size, the same for all groups.
                    rows = _group_rows(bench.name, measured, figures_fn, ctx.world_size)
                else:
                    rows = [_rank_row(bench.name, m, ctx.world_size) for m in measured]
                result.rows.setdefault(bench.name, []).extend(rows)
                result.total += len(rows)
                result.failed += sum(1 for r in rows if not r["passed"])
                if on_rows:
                    on_rows(bench, rows)
                if on_progress:
                    on_progress(done, plan.total, bench, rows)
            del mine
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    return result
