"""`harness accept` on one rank: health facts, then the benchmark stages on every rank at once,
then (rank 0) the checks, the report and the verdict. Nothing here measures anything itself:
the stages are suites of the benchmark plug-ins run by the one driver.

Stages (each skipped where it cannot apply, with a note):
- per GPU: gemm (the profile's gated dtypes) and memory (STREAM), every rank at the same time,
  as a node runs in a job (REFERENCE §2: the node's figure is its slowest GPU);
- per node: all_reduce in one sub-communicator per node (bench.groups = nodes);
- across nodes: all_reduce over the world, and node_pairs (paired nodes exchange) so that a
  slow link is pinned to a node rather than seen as a slow ring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import devices, display, dist, hardware, plots
from harness.accept import gates, health, report
from harness.accept.checks import STATUSES, Check, verdict
from harness.bench import gemm, ranks
from harness.bench.base import Benchmark, BenchSpec, PlanEnv
from harness.bench.collectives.base import CollectiveOptions
from harness.bench.driver import Fault, SuitePlan, plan_suite, run_suite
from harness.bench.gemm import GemmOptions
from harness.bench.spec import bench_spec
from harness.config.job import Job
from harness.config.schema import AcceptConfig, RunConfig
from harness.config.validate import as_list, choices, int_at_least, number_at_least, shapes, size
from harness.dtypes import SIZES, canonical
from harness.errors import EXIT_FAILED, EXIT_OK, ConfigError
from harness.results import DamagedRun, RunRecord, read_manifest
from harness.tasks import Outcome

DEFAULT_SHAPES = {"cuda": ((8192, 8192, 8192),), "cpu": ((384, 384, 384),)}
DEFAULT_COMM_BYTES = {"cuda": "1G", "cpu": "4M"}


@dataclass(frozen=True)
class Stage:
    """One acceptance stage: the benchmarks it runs with their options, and the scope its gate
    figures are read at (gpu, node, world)."""

    name: str
    names: tuple[str, ...]
    spec: BenchSpec


@dataclass(frozen=True)
class AcceptPlan:
    """What `harness accept` will run and how it judges."""

    profile: hardware.Profile
    base: BenchSpec
    """bench.* (warmup, iterations) that every stage starts from."""
    gemm_dtypes: tuple[str, ...]
    gemm_shapes: tuple[tuple[int, int, int], ...]
    comm_bytes: int
    outlier_mad: float
    outlier_min_rel: float
    gpus_per_node: int | None
    cores_per_node: int | None
    partition: str
    fault: Fault
    injected: dict[str, Any]
    """Faults a test planted (recorded in the manifest; such runs never feed the GPU history)."""
    telemetry_interval_s: float | None
    retries: int = 1
    min_peers: int = 3
    health: str = "on"


def _check_options(a: AcceptConfig) -> None:
    if a.comm_bytes is not None and size("accept.comm_bytes", a.comm_bytes) < 1024:
        raise ConfigError(f"accept.comm_bytes={a.comm_bytes} must be at least 1K")
    number_at_least("accept.outlier_mad", a.outlier_mad, 0)
    number_at_least("accept.outlier_min_rel", a.outlier_min_rel, 0)
    for key in ("gpus_per_node", "cores_per_node"):
        if getattr(a, key) is not None:
            int_at_least(f"accept.{key}", getattr(a, key), 1)
    int_at_least("accept.retries", a.retries, 0, 5)
    int_at_least("accept.min_peers", a.min_peers, 2)
    if a.health not in health.HEALTH_MODES:
        raise ConfigError(f"accept.health={a.health!r}; choices: {', '.join(health.HEALTH_MODES)}")


def _gpus_per_node(cfg: RunConfig, device_type: str) -> int | None:
    """accept.gpus_per_node, or cluster.gpus_per_node on GPU nodes (a CPU node has none to count)."""
    given = cfg.accept.gpus_per_node
    return given if given is not None or device_type != "cuda" else cfg.cluster.gpus_per_node


def validate(job: Job) -> AcceptPlan:
    """Everything `harness accept` can check before a rank starts, so that bad input leaves no
    run behind: accept.*, bench.*, the hardware profile (auto: this device's) and its thresholds,
    the site's references, the GEMM dtypes this device has, fault.*; ConfigError naming the key."""
    cfg, device_type = job.config, job.device_type
    a = cfg.accept
    _check_options(a)
    name = devices.device_name(device_type)
    profile = hardware.resolve(dataclasses.asdict(cfg.hardware), name, device_type)
    gates.validate_thresholds(profile)
    gates.validate_references(cfg.site.references)
    bench: gemm.Gemm = gemm.BENCHMARK
    named = choices("accept.gemm_dtypes", [canonical(d, key="accept.gemm_dtypes") for d in as_list(a.gemm_dtypes)]
                    if a.gemm_dtypes else None, tuple(SIZES))  # fmt: skip
    dtypes = named or bench.gated_dtypes(profile.thresholds) or ("float32",)
    available = bench.dtypes(device_type)
    missing = [d for d in dtypes if d not in available]
    if missing:  # named by where the dtypes came from, not by the bench.dtype they become
        source = "accept.gemm_dtypes" if named else f"hardware={profile.name}'s gemm thresholds"
        raise ConfigError(f"{source}: {', '.join(missing)} not available for gemm on {device_type}; "
                          f"choices: {', '.join(available)}")  # fmt: skip
    injected = {k: v for k, v in dataclasses.asdict(cfg.fault).items() if v is not None and k != "slow_factor"}
    if cfg.debug.fault != "none":
        injected.update({"debug.fault": cfg.debug.fault, "debug.fault_rank": cfg.debug.fault_rank})
    plan = AcceptPlan(
        profile=profile, base=bench_spec(cfg.bench, cfg.seed), gemm_dtypes=tuple(dtypes),
        gemm_shapes=shapes("accept.gemm_shapes", a.gemm_shapes) or DEFAULT_SHAPES[device_type],
        comm_bytes=size("accept.comm_bytes", a.comm_bytes or DEFAULT_COMM_BYTES[device_type]),
        outlier_mad=float(a.outlier_mad), outlier_min_rel=float(a.outlier_min_rel),
        gpus_per_node=_gpus_per_node(cfg, device_type),
        cores_per_node=a.cores_per_node, partition=str(a.partition or dist.slurm_partition() or "*"),
        fault=ranks.fault_of(cfg, job.world_size), injected=injected,
        telemetry_interval_s=cfg.telemetry.interval_ms / 1000 if cfg.telemetry.enabled else None,
        retries=a.retries, min_peers=a.min_peers, health=a.health,
    )  # fmt: skip
    env = PlanEnv(device_type=device_type, free_memory_bytes=devices.free_memory_bytes(device_type), device_name=name)
    for stage in stages(plan, nodes=1, per_node=1):
        plan_suite(stage.names, stage.spec, env)
    return plan


def stages(plan: AcceptPlan, nodes: int, per_node: int) -> list[Stage]:
    """The stages in order; warmup and iterations come from bench.*."""
    base = plan.base
    comm = dataclasses.replace(base, dtypes=("float32",), min_bytes=max(1024, plan.comm_bytes // 64),
                               max_bytes=plan.comm_bytes, step_factor=4)  # fmt: skip
    comm = comm.with_options("collectives", CollectiveOptions(("sum",), 0, False))
    out = [
        Stage("gpu", ("gemm",), dataclasses.replace(base, dtypes=plan.gemm_dtypes).with_options(
            "gemm", GemmOptions(plan.gemm_shapes))),
        Stage("gpu", ("memory",), dataclasses.replace(base, dtypes=None)),
    ]  # fmt: skip
    if per_node >= 2:
        out.append(Stage("node", ("all_reduce",), dataclasses.replace(comm, groups=nodes)))
    if nodes >= 2:
        out.append(Stage("world", ("all_reduce",), comm))
        out.append(Stage("pairs", ("node_pairs",), dataclasses.replace(comm, min_bytes=plan.comm_bytes)))
    return out


def known_bad(results_dir: str) -> dict[str, str]:
    """UUIDs flagged by earlier acceptance runs under results.dir: {uuid: 'run id: checks'}, so
    that a bad GPU returned to service is recognised."""
    found: dict[str, str] = {}
    for path in sorted(Path(results_dir).glob("*-accept-*")):
        try:
            data = read_manifest(path)
        except DamagedRun:
            continue
        accept = data.get("accept") or {}
        if data.get("task") != "accept" or accept.get("fault_injection"):  # a test's planted faults
            continue
        for item in accept.get("flagged", []):
            if item.get("uuid"):
                found[item["uuid"]] = f"run {data.get('run_id')}: {item.get('check')} on {item.get('subject')}"
    return found


@dataclass
class Measured:
    """What the stages measured (rank 0): the rows of each stage, plug-in and attempt, in order,
    and the figures of re-tested subjects on each later attempt."""

    parts: list[tuple[Stage, Benchmark, list[dict]]] = dataclasses.field(default_factory=list)
    retested: dict[tuple[str, str], list[float]] = dataclasses.field(default_factory=dict)
    """(metric, subject) -> its value on every attempt."""

    def by_bench(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for _, bench, rows in self.parts:
            out.setdefault(bench.name, []).extend(rows)
        return out

    def ran(self, stage: str) -> bool:
        return any(s.name == stage and rows for s, _, rows in self.parts)


def run(job: Job, ctx: dist.DistContext, record: RunRecord | None) -> Outcome:
    """Health, stages (re-tested where they failed) and (rank 0) the verdict."""
    plan: AcceptPlan = job.plan
    nodes, per_node = ranks.node_count(ctx), max(1, ctx.launch.local_world_size)
    uuid = devices.gpu_uuid(ctx.device) if ctx.device.type == "cuda" else None
    facts = health.collect(ctx.device, host=dist.host_name(), rank=ctx.rank, local_rank=ctx.launch.local_rank,
                           uuid=uuid)  # fmt: skip
    all_facts = dist.gather_objects(ctx, facts)
    by_rank = {f["rank"]: f for f in all_facts or []}
    if record:
        record.update(accept={"profile": plan.profile.name, "partition": plan.partition, "nodes": nodes,
                              "fault_injection": plan.injected or None})  # fmt: skip
        if plan.injected:
            display.note(f"FAULT INJECTION ON (testing only): {plan.injected}")
    env = ranks.plan_env(ctx, nodes=nodes)
    suites = [(stage, plan_suite(stage.names, stage.spec, env)) for stage in stages(plan, nodes, per_node)]
    _, tele_note = ranks.telemetry_for(plan.telemetry_interval_s, ctx)
    notes = [n for _, suite in suites for n in suite.notes] + ([tele_note] if tele_note else [])
    if plan.injected:
        notes.append(f"fault injection on: {plan.injected}")
    if record:
        record.update(notes=list(dict.fromkeys(notes)))
    measured = Measured()
    _measure(suites, range(len(suites)), 1, ctx, plan, record, measured)
    for attempt in range(2, plan.retries + 2):
        # Rank 0 alone judges; every rank learns which stages run again.
        site = dict(job.config.site.references)
        retest = _failing(measured, suites, by_rank, ctx.device.type, plan, site) if ctx.is_root else None
        retest = dist.broadcast_object(ctx, retest)
        if not retest:
            break
        if ctx.is_root:
            display.note(f"re-testing {', '.join(sorted(retest['subjects']))} (attempt {attempt}): "
                         f"{', '.join(retest['metrics'])} failed")  # fmt: skip
        before = len(measured.parts)
        _measure(suites, retest["stages"], attempt, ctx, plan, record, measured)
        if ctx.is_root:
            _record_retest(measured, measured.parts[before:], retest, by_rank, ctx.device.type, attempt)
    if not record:
        return Outcome()
    return _conclude(job, ctx, record, all_facts or [], measured, nodes)


def _measure(suites: list[tuple[Stage, SuitePlan]], which: Any, attempt: int, ctx: dist.DistContext,
             plan: AcceptPlan, record: RunRecord | None, measured: Measured) -> None:  # fmt: skip
    """Run the stages `which` (indices into suites) on every rank; rank 0 keeps the rows."""
    chosen = [suites[i] for i in which]
    tele, _ = ranks.telemetry_for(plan.telemetry_interval_s, ctx)
    with display.Progress(sum(p.total for _, p in chosen), enabled=ctx.is_root) as progress:
        offset = 0
        for stage, suite in chosen:

            def on_rows(bench: Benchmark, new: list[dict], stage: Stage = stage) -> None:
                measured.parts.append((stage, bench, new))
                if record:
                    record.add_rows(new)

            def advance(done: int, total: int, bench: Any, new: list[dict], offset: int = offset) -> None:
                progress.advance(offset + done, progress.total, bench, new)

            labels = {"stage": stage.name, **({"attempt": attempt} if attempt > 1 else {})}
            run_suite(suite, ctx, fault=plan.fault if attempt == 1 else Fault(slow_rank=plan.fault.slow_rank,
                                                                             slow_factor=plan.fault.slow_factor),
                      tele=tele, labels=labels, on_rows=on_rows, on_progress=advance,
                      device_name=devices.device_name(ctx.device.type))  # fmt: skip
            offset += suite.total


def _performance(checks: list[Check]) -> list[Check]:
    """Failed threshold, reference and outlier checks: what a re-test may clear."""
    return [c for c in checks if c.status == "fail" and c.scope in ("gpu", "rank", "node")]


def _judged(measured: Measured, by_rank: dict[int, dict], device_type: str, plan: AcceptPlan,
            site: dict[str, Any]) -> tuple[list[gates.Figure], list[Check]]:  # fmt: skip
    figures = [f for _, f in _figures(measured, by_rank, device_type)]
    checks = gates.judge(figures, plan.profile, site=site, partition=plan.partition, outlier_mad=plan.outlier_mad,
                         outlier_min_rel=plan.outlier_min_rel, min_peers=plan.min_peers)  # fmt: skip
    return figures, checks


def _failing(measured: Measured, suites: list[tuple[Stage, SuitePlan]], by_rank: dict[int, dict],
             device_type: str, plan: AcceptPlan, site: dict[str, Any]) -> dict[str, Any] | None:  # fmt: skip
    """The stages to run again: those whose figures failed a gate, with the failing subjects."""
    failed = _performance(_judged(measured, by_rank, device_type, plan, site)[1])
    if not failed:
        return None
    stages_run = [stage for stage, _ in suites]
    stage_of = {f.metric: stages_run.index(stage) for stage, f in _figures(measured, by_rank, device_type)}
    metrics = sorted({c.name.removesuffix("_outlier").removesuffix("_reference") for c in failed})
    return {"stages": sorted({stage_of[m] for m in metrics if m in stage_of}), "metrics": metrics,
            "subjects": sorted({c.subject for c in failed}),
            "pairs": sorted({(c.name.removesuffix("_outlier").removesuffix("_reference"), c.subject)
                             for c in failed})}  # fmt: skip


def _record_retest(measured: Measured, new_parts: list[tuple[Stage, Benchmark, list[dict]]], retest: dict[str, Any],
                   by_rank: dict[int, dict], device_type: str, attempt: int) -> None:  # fmt: skip
    """Keep each failing subject's value from the re-test beside its earlier ones."""
    before = {(f.metric, f.subject): f.value for _, f in _figures(measured, by_rank, device_type)}
    again = {(f.metric, f.subject): f.value
             for _, f in _figures(Measured(new_parts), by_rank, device_type, attempt=attempt)}  # fmt: skip
    for pair in map(tuple, retest["pairs"]):
        if pair in again:
            measured.retested.setdefault(pair, [before.get(pair, float("nan"))]).append(again[pair])


def _not_run(measured: Measured, nodes: int, per_node: int) -> list[Check]:
    """The bandwidth gates a job of this shape cannot measure, listed as not applicable."""
    out = []
    if not measured.ran("node"):
        reason = f"{per_node} rank per node: no intra-node collective to measure"
        out.append(Check("all_reduce_busbw_gbps", "cluster", "cluster", "n/a", reason))
    if nodes < 2:
        out.append(Check("all_reduce_world_busbw_gbps", "cluster", "cluster", "n/a", "one node: nothing between nodes"))
        out.append(Check("node_pair_busbw_gbps", "cluster", "cluster", "n/a", "one node: no node pairs"))
    return out


def _figures(measured: Measured, by_rank: dict[int, dict], device_type: str,
             attempt: int = 1) -> list[tuple[Stage, gates.Figure]]:  # fmt: skip
    """(stage, figure) for every gate figure the plug-ins declare, from each stage's rows of one
    attempt; on the first, a re-tested subject takes the value of its last attempt."""
    merged: dict[tuple[str, str], tuple[Stage, Benchmark, list[dict]]] = {}
    for stage, bench, rows in measured.parts:  # a plug-in's rows of one stage, all cases together
        mine = [r for r in rows if r.get("attempt", 1) == attempt]
        if mine:
            key = (stage.name, bench.name)
            merged[key] = (stage, bench, merged.get(key, (stage, bench, []))[2] + mine)
    out = []
    for stage, bench, rows in merged.values():
        for value in bench.gate_values(rows, scope=stage.name):
            figure = gates.place(value, by_rank, device_type)
            values = measured.retested.get((figure.metric, figure.subject)) if attempt == 1 else None
            if values:
                figure = dataclasses.replace(figure, value=values[-1], attempts=tuple(values))
            out.append((stage, figure))
    return out


def _banners(plan: AcceptPlan, figures: list[gates.Figure], measured: Measured, device_type: str) -> list[str]:
    """What a reader must know before the verdict: gates that did not judge, checks skipped."""
    out = []
    few = gates.too_few_peers_note(figures, plan.min_peers)
    if few:
        out.append(few)
    if plan.health == "skip" and device_type == "cuda":
        out.append("GPU health not checked (accept.health=skip): ECC, remapped rows, PCIe, throttle, persistence")
    if measured.retested:
        out.append(f"re-tested {len(measured.retested)} figure(s) (accept.retries={plan.retries}); a subject is "
                   "flagged only if it failed every attempt")  # fmt: skip
    return out


def _conclude(job: Job, ctx: dist.DistContext, record: RunRecord, facts: list[dict], measured: Measured,
              nodes: int) -> Outcome:  # fmt: skip
    """Rank 0 only (no collective call here): checks, verdict, report files."""
    plan: AcceptPlan = job.plan
    cfg = job.config
    by_rank = {f["rank"]: f for f in facts}
    rows = measured.by_bench()
    checks: list[Check] = health.evaluate(facts, gpus_per_node=plan.gpus_per_node,
                                          cores_per_node=plan.cores_per_node, known_bad=known_bad(cfg.results.dir),
                                          health=plan.health)  # fmt: skip
    checks += gates.correctness(rows, by_rank, ctx.device.type)
    checks += _not_run(measured, nodes, max(1, ctx.launch.local_world_size))
    figures, judged = _judged(measured, by_rank, ctx.device.type, plan, dict(cfg.site.references))
    checks += judged
    result = verdict(checks)
    banners = _banners(plan, figures, measured, ctx.device.type)
    exclude = report.exclude_list(checks)
    drains = report.drain_lines(checks, record.run_id)
    meta = {"run": record.run_id, "hardware profile": plan.profile.name, "site": cfg.site.name,
            "partition": plan.partition, "nodes": nodes, "ranks": ctx.world_size,
            "devices": ", ".join(sorted({str(f.get("name") or f.get("device_type")) for f in facts}))}  # fmt: skip
    record.add_rows([{"kind": "accept_check", "passed": c.status != "fail",
                      **{k: v for k, v in c.to_dict().items() if v is not None}} for c in checks])  # fmt: skip
    images = report.bar_plots(checks)
    busbw = plots.busbw_plot({k: v for k, v in rows.items() if k == "all_reduce"})
    if busbw:
        images = {"busbw.png": busbw, **images}
    for name, png in images.items():
        record.add_file(name, png)
    record.add_file("report.html", report.html_report(checks, result, meta, exclude, drains, images,
                                                      banners).encode())  # fmt: skip
    record.add_file("report.md", report.markdown(checks, result, meta, exclude, drains, banners).encode())
    record.add_file("junit.xml", report.junit(checks, record.run_id))
    record.add_file("exclude.txt", (exclude + "\n" if exclude else "").encode())
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    keys = ("subject", "uuid", "host", "rank", "value", "threshold", "reason")
    flagged = [{"check": c.name, **{k: getattr(c, k) for k in keys}} for c in report.flagged(checks)]
    accept = dict(record.manifest.get("accept") or {})
    accept.update(
        verdict=result,
        checks=counts,
        flagged=flagged,
        exclude=exclude,
        drain=drains,
        banners=banners,
        retested=[{"metric": m, "subject": s, "values": v} for (m, s), v in measured.retested.items()],
    )
    record.update(accept=accept, summary={"accept": {"verdict": result, **counts, "exclude": exclude}})

    def show() -> None:
        report.console(checks, result, exclude, drains, banners)

    if result == "fail":
        failed = sorted({c.name for c in checks if c.status == "fail"})
        return Outcome("failed", f"acceptance failed: {counts['fail']} checks ({', '.join(failed)})", EXIT_FAILED, show)
    return Outcome("ok", None, EXIT_OK, show)
