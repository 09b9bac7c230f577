"""The one benchmark driver: plans cases, times them, checks them, samples telemetry beside
them, aggregates across ranks and groups, shows progress and hands rows to the run record.
Plug-ins only plan, build and count (see base.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from harness import dist, telemetry
from harness.bench.base import Benchmark, BenchSpec, CaseSpec, PlanEnv, Runnable, Where
from harness.bench.registry import expand, get
from harness.bench.timing import measure, synchronize
from harness.errors import ConfigError


@dataclass(frozen=True)
class SuitePlan:
    """What a `harness bench` run will measure: plug-ins with their cases, in order."""

    spec: BenchSpec
    items: tuple[tuple[Benchmark, tuple[CaseSpec, ...]], ...]
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(len(cases) for _, cases in self.items)


@dataclass
class SuiteResult:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: int = 0
    total: int = 0


def plan_suite(names: tuple[str, ...] | list[str], spec: BenchSpec, env: PlanEnv) -> SuitePlan:
    """Resolve names and dtypes and enumerate every case; ConfigError for anything that cannot run."""
    if not names:
        raise ConfigError("no benchmark named; usage: harness bench NAME[,NAME...], e.g. harness bench gemm")
    if env.world_size and env.world_size % spec.groups:
        raise ConfigError(
            f"bench.groups={spec.groups} does not divide the world size {env.world_size}; "
            f"choose one of {', '.join(str(g) for g in range(1, env.world_size + 1) if env.world_size % g == 0)}"
        )
    items = []
    for name in expand(list(names)):
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
        items.append((bench, tuple(bench.plan(spec, dtypes, env))))
    if not any(cases for _, cases in items):
        raise ConfigError(f"nothing to measure: {'; '.join(env.notes) or 'no case in the plan'}")
    return SuitePlan(spec, tuple(items), tuple(env.notes))


@dataclass(frozen=True)
class Fault:
    """Injected fault (debug.fault, or fault.corrupt_rank as wrong_result) and the rank it hits;
    fault.slow_rank makes one rank slow inside its timed region."""

    kind: str = "none"
    rank: int = 0
    slow_rank: int | None = None
    slow_factor: float = 3.0


@dataclass(frozen=True)
class Telemetry:
    """Sampling settings and this rank's source (None: off)."""

    source: telemetry.Source | None = None
    interval_s: float = 0.1


@dataclass(frozen=True)
class Measurement:
    """One rank's measurement of one case: frozen and picklable, gathered to rank 0."""

    case: CaseSpec
    rank: int
    local_rank: int
    host: str
    group: int
    median_s: float
    min_s: float
    max_s: float
    check: Mapping[str, Any]
    """The plug-in's verify(): passed, and wrong / rel_error / ... as it checks."""
    telemetry: Mapping[str, Any]
    device_name: str = ""

    @property
    def wrong(self) -> int:
        return int(self.check.get("wrong", 0) or 0)

    def to_row(self, kind: str, world_size: int, figures: Mapping[str, Any]) -> dict[str, Any]:
        """This rank's row (plug-ins that measure each rank's own device)."""
        return {
            "kind": kind, **self.case.labels(), "rank": self.rank, "local_rank": self.local_rank,
            "host": self.host, "world_size": world_size, "time_us": self.median_s * 1e6,
            "time_us_min": self.min_s * 1e6, "time_us_max": self.max_s * 1e6, **figures, **self.check,
            **self.telemetry,
        }  # fmt: skip


def group_row(kind: str, members: list[Measurement], world_size: int, figures: Mapping[str, Any]) -> dict[str, Any]:
    """A communicator's row: each rank's median, then the slowest rank's (as nccl-tests)."""
    slowest = max(members, key=lambda m: m.median_s)
    wrong = sum(m.wrong for m in members)
    return {
        "kind": kind, **members[0].case.labels(), "group": members[0].group, "group_size": len(members),
        "world_size": world_size, "time_us": slowest.median_s * 1e6,
        "time_us_min": min(m.median_s for m in members) * 1e6, "time_us_max": slowest.median_s * 1e6,
        "slowest_rank": slowest.rank, **figures, "wrong": wrong,
        "wrong_ranks": [m.rank for m in members if m.wrong], "passed": wrong == 0,
        **telemetry.merge([dict(m.telemetry) for m in members]),
    }  # fmt: skip


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


def _measure_case(bench: Benchmark, case: CaseSpec, ctx: dist.DistContext, spec: BenchSpec, comm: dist.Comm, *,
                  corrupt: bool, tele: Telemetry, fault: Fault, device_name: str) -> Measurement:  # fmt: skip
    """Check once, then time with telemetry; returns this rank's measurement."""
    runnable: Runnable = bench.build(case, ctx, spec, comm)
    run = runnable.run
    if fault.slow_rank == ctx.rank:
        run = _slowed(run, ctx.device, fault.slow_factor)
    if runnable.reset:
        runnable.reset()
    if runnable.prepare:
        runnable.prepare()
    run()
    synchronize(ctx.device)
    if corrupt:
        flat = runnable.output.view(-1)
        flat[0] = flat[0] + 1000
    check = runnable.verify()
    sampler = telemetry.Sampler(tele.source, tele.interval_s) if tele.source else None
    if sampler:
        sampler.start()
    timing = measure(run, device=ctx.device, warmup=spec.warmup, iters=spec.iters, prepare=runnable.prepare)
    summary = sampler.stop() if sampler else {}
    return Measurement(case, ctx.rank, ctx.launch.local_rank, dist.host_name(), comm.index, timing.median,
                       timing.min, timing.max, check, summary, device_name)  # fmt: skip


def _rows(bench: Benchmark, measured: list[Measurement], world_size: int, device_type: str,
          earlier: list[dict[str, Any]], labels: Mapping[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Rank 0: the rows of one case (one per communicator for collectives, one per rank else)."""
    rows = []
    if bench.collective:
        for group in sorted({m.group for m in measured}):
            members = [m for m in measured if m.group == group]
            slowest = max(members, key=lambda m: m.median_s)
            where = Where(device_type, slowest.device_name, len(members))
            rows.append(group_row(bench.name, members, world_size, bench.figures(slowest.case, slowest.median_s,
                                                                                where)))  # fmt: skip
    else:
        for m in measured:
            where = Where(device_type, m.device_name, 1)
            figures = bench.figures(m.case, m.median_s, where)
            if bench.best_of:
                best = bench.figures(m.case, m.min_s, where)
                figures.update({f"{key}_best": best.get(key) for key in bench.best_of})
            rows.append(m.to_row(bench.name, world_size, figures))
    out = []
    for row in rows:
        row = {**row, **labels}
        row.update(bench.derive(row, earlier + out))
        out.append(row)
    return out


def run_suite(
    plan: SuitePlan,
    ctx: dist.DistContext,
    *,
    fault: Fault = Fault(),
    tele: Telemetry = Telemetry(),
    labels: Mapping[str, Any] | None = None,
    device_name: str = "",
    on_rows: Callable[[Benchmark, list[dict]], None] | None = None,
    on_progress: Callable[[int, int, Benchmark, list[dict]], None] | None = None,
) -> SuiteResult:
    """Measure every case of the plan on every rank; rank 0 receives the rows. `labels` are
    added to every row (acceptance's stage)."""
    result = SuiteResult()
    done = 0
    _inject_before(fault, ctx)
    for bench, cases in plan.items:
        comm = dist.split(ctx, plan.spec.groups) if bench.collective else dist.split(ctx, 1)
        for case in cases:
            corrupt = fault.kind == "wrong_result" and fault.rank == ctx.rank and done == 0
            mine = _measure_case(bench, case, ctx, plan.spec, comm, corrupt=corrupt, tele=tele, fault=fault,
                                 device_name=device_name)  # fmt: skip
            measured = dist.gather_objects(ctx, mine)
            done += 1
            if ctx.is_root and measured:
                earlier = result.rows.setdefault(bench.name, [])
                rows = _rows(bench, measured, ctx.world_size, ctx.device.type, earlier, labels or {})
                earlier.extend(rows)
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
