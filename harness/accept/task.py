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
import json
from pathlib import Path
from typing import Any

from harness import devices, display, dist, hardware, plots, units
from harness.accept import gates, health, report
from harness.accept.checks import STATUSES, Check, verdict
from harness.bench import get
from harness.bench.base import BenchSpec, PlanEnv
from harness.bench.driver import SuitePlan, plan_suite, run_suite
from harness.bench.task import fault_of, min_free_memory, node_count, ranks_sharing_memory, telemetry_for
from harness.config.schema import RunConfig
from harness.config.validate import as_list, bench_spec, parse_shapes, validate_accept, validate_faults
from harness.errors import EXIT_FAILED, EXIT_OK, ConfigError
from harness.results import RunRecord
from harness.runner import Outcome

DEFAULT_SHAPES = {"cuda": ((8192, 8192, 8192),), "cpu": ((384, 384, 384),)}
DEFAULT_COMM_BYTES = {"cuda": "1G", "cpu": "4M"}


def validate(cfg: RunConfig, world: int | None, device_type: str) -> None:
    """Everything `harness accept` can check before a rank starts, so that bad input leaves no
    run behind: accept.*, bench.*, the hardware profile (auto: this device's) and its thresholds,
    the site's references, the GEMM dtypes this device has, fault.*; ConfigError naming the key."""
    validate_accept(cfg)
    name = devices.device_name(device_type)
    profile = hardware.resolve(dataclasses.asdict(cfg.hardware), name, device_type)
    gates.validate_thresholds(profile)
    gates.validate_references(cfg.site.references)
    env = PlanEnv(device_type=device_type, free_memory_bytes=devices.free_memory_bytes(device_type), device_name=name)
    available = get("gemm").dtypes(device_type)
    for _, names, spec in stage_specs(cfg, device_type, profile, nodes=1, per_node=1):
        missing = [d for d in spec.dtypes or () if names == ["gemm"] and d not in available]
        if missing:  # named by where the dtypes came from, not by the bench.dtype they become
            source = "accept.gemm_dtypes" if cfg.accept.gemm_dtypes else f"hardware={profile.name}'s gemm thresholds"
            raise ConfigError(f"{source}: {', '.join(missing)} not available for gemm on {device_type}; "
                              f"choices: {', '.join(available)}")  # fmt: skip
        plan_suite(names, spec, env)
    validate_faults(cfg, world)


def stage_specs(cfg: RunConfig, device_type: str, profile: hardware.Profile, nodes: int, per_node: int
                ) -> list[tuple[str, list[str], BenchSpec]]:  # fmt: skip
    """(stage, benchmarks, driver options) in order; warmup and iterations come from bench.*."""
    base = bench_spec(cfg.bench, cfg.seed)
    a = cfg.accept
    gated = [k.removeprefix("gemm_") for k in profile.thresholds if k.startswith("gemm_")]
    dtypes = tuple(as_list(a.gemm_dtypes) or gated or ["float32"])
    shapes = parse_shapes("accept.gemm_shapes", a.gemm_shapes) if a.gemm_shapes else DEFAULT_SHAPES[device_type]
    comm = units.parse_bytes(str(a.comm_bytes or DEFAULT_COMM_BYTES[device_type]))
    comm_spec = dataclasses.replace(base, dtypes=("float32",), min_bytes=max(1024, comm // 64), max_bytes=comm,
                                    step_factor=4, in_place=False, redops=("sum",))  # fmt: skip
    stages = [
        ("gpu", ["gemm"], dataclasses.replace(base, dtypes=dtypes, shapes=tuple(shapes))),
        ("gpu", ["memory"], dataclasses.replace(base, dtypes=None)),
    ]
    if per_node >= 2:
        stages.append(("node", ["all_reduce"], dataclasses.replace(comm_spec, groups=nodes)))
    if nodes >= 2:
        stages.append(("world", ["all_reduce"], comm_spec))
        stages.append(("pairs", ["node_pairs"], dataclasses.replace(comm_spec, min_bytes=comm)))
    return stages


def known_bad(results_dir: str) -> dict[str, str]:
    """UUIDs flagged by earlier acceptance runs under results.dir: {uuid: 'run id: checks'}, so
    that a bad GPU returned to service is recognised."""
    found: dict[str, str] = {}
    for manifest in sorted(Path(results_dir).glob("*-accept-*/manifest.json")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        accept = data.get("accept") or {}
        if data.get("task") != "accept" or accept.get("fault_injection"):  # a test's planted faults
            continue
        for item in accept.get("flagged", []):
            if item.get("uuid"):
                found[item["uuid"]] = f"run {data.get('run_id')}: {item.get('check')} on {item.get('subject')}"
    return found


def _partition(cfg: RunConfig) -> str:
    return str(cfg.accept.partition or dist.slurm_partition() or "*")


def run(cfg: RunConfig, ctx: dist.DistContext, record: RunRecord | None) -> Outcome:
    """Health, stages and (rank 0) the verdict."""
    profile = hardware.resolve(dataclasses.asdict(cfg.hardware), devices.device_name(ctx.device.type), ctx.device.type)
    nodes, per_node = node_count(ctx), max(1, ctx.launch.local_world_size)
    uuid = devices.gpu_uuid(ctx.device) if ctx.device.type == "cuda" else None
    facts = health.collect(ctx.device, host=dist.host_name(), rank=ctx.rank, local_rank=ctx.launch.local_rank,
                           uuid=uuid)  # fmt: skip
    all_facts = dist.gather_objects(ctx, facts)
    fault = fault_of(cfg)
    injected = {k: v for k, v in dataclasses.asdict(cfg.fault).items() if v is not None and k != "slow_factor"}
    if cfg.debug.fault != "none":
        injected.update({"debug.fault": cfg.debug.fault, "debug.fault_rank": cfg.debug.fault_rank})
    if record:
        record.update(accept={"profile": profile.name, "partition": _partition(cfg), "nodes": nodes,
                              "fault_injection": injected or None})  # fmt: skip
        if injected:
            display.note(f"FAULT INJECTION ON (testing only): {injected}")
    plans = _plans(cfg, ctx, profile, nodes, per_node)
    rows: dict[str, list[dict]] = {}
    tele, tele_note = telemetry_for(cfg, ctx)
    notes = [n for _, plan in plans for n in plan.notes] + ([tele_note] if tele_note else [])
    if injected:
        notes.append(f"fault injection on: {injected}")
    if record:
        record.update(notes=list(dict.fromkeys(notes)))
    with display.Progress(sum(p.total for _, p in plans), enabled=ctx.is_root) as progress:
        offset = 0
        for stage, plan in plans:

            def on_rows(_bench: Any, new: list[dict], stage: str = stage) -> None:
                for row in new:
                    row["stage"] = stage
                    rows.setdefault(row["bench"], []).append(row)
                if record:
                    record.add_rows(new)

            def advance(done: int, total: int, bench: Any, new: list[dict], offset: int = offset) -> None:
                progress.advance(offset + done, progress.total, bench, new)

            run_suite(plan, ctx, fault=fault, tele=tele, on_rows=on_rows, on_progress=advance)
            offset += plan.total
    if not record:
        return Outcome()
    return _conclude(cfg, ctx, record, profile, all_facts or [], rows, nodes)


def _plans(cfg: RunConfig, ctx: dist.DistContext, profile: hardware.Profile, nodes: int, per_node: int
           ) -> list[tuple[str, SuitePlan]]:  # fmt: skip
    free = min_free_memory(ctx)
    plans = []
    for stage, names, spec in stage_specs(cfg, ctx.device.type, profile, nodes, per_node):
        env = PlanEnv(device_type=ctx.device.type, free_memory_bytes=free, world_size=ctx.world_size,
                      ranks_per_host=ranks_sharing_memory(ctx), device_name=devices.device_name(ctx.device.type),
                      nodes=nodes)  # fmt: skip
        plans.append((stage, plan_suite(names, spec, env)))
    return plans


def _not_run(rows: dict[str, list[dict]], nodes: int, per_node: int) -> list[Check]:
    """The bandwidth gates a job of this shape cannot measure, listed as not applicable."""
    out = []
    if not any(r.get("stage") == "node" for r in rows.get("all_reduce", [])):
        reason = f"{per_node} rank per node: no intra-node collective to measure"
        out.append(Check("all_reduce_busbw_gbps", "cluster", "cluster", "n/a", reason))
    if nodes < 2:
        out.append(Check("all_reduce_world_busbw_gbps", "cluster", "cluster", "n/a", "one node: nothing between nodes"))
        out.append(Check("node_pair_busbw_gbps", "cluster", "cluster", "n/a", "one node: no node pairs"))
    return out


def _conclude(cfg: RunConfig, ctx: dist.DistContext, record: RunRecord, profile: hardware.Profile,
              facts: list[dict], rows: dict[str, list[dict]], nodes: int) -> Outcome:  # fmt: skip
    """Rank 0 only (no collective call here): checks, verdict, report files."""
    by_rank = {f["rank"]: f for f in facts}
    checks: list[Check] = health.evaluate(facts, gpus_per_node=cfg.accept.gpus_per_node,
                                          cores_per_node=cfg.accept.cores_per_node,
                                          known_bad=known_bad(cfg.results.dir))  # fmt: skip
    checks += gates.correctness(rows, by_rank, ctx.device.type)
    checks += _not_run(rows, nodes, max(1, ctx.launch.local_world_size))
    figures = gates.figures_from_rows(rows, by_rank, ctx.device.type)
    checks += gates.judge(figures, profile, site=dict(cfg.site.references), partition=_partition(cfg),
                          outlier_mad=float(cfg.accept.outlier_mad),
                          outlier_min_rel=float(cfg.accept.outlier_min_rel))  # fmt: skip
    result = verdict(checks)
    exclude = report.exclude_list(checks)
    drains = report.drain_lines(checks, record.run_id)
    meta = {"run": record.run_id, "hardware profile": profile.name, "site": cfg.site.name,
            "partition": _partition(cfg), "nodes": nodes, "ranks": ctx.world_size,
            "devices": ", ".join(sorted({str(f.get("name") or f.get("device_type")) for f in facts}))}  # fmt: skip
    record.add_rows([{"bench": "accept_check", "passed": c.status != "fail",
                      **{k: v for k, v in c.to_dict().items() if v is not None}} for c in checks])  # fmt: skip
    images = report.bar_plots(checks)
    busbw = plots.busbw_plot({k: v for k, v in rows.items() if k == "all_reduce"})
    if busbw:
        images = {"busbw.png": busbw, **images}
    for name, png in images.items():
        record.add_file(name, png)
    record.add_file("report.html", report.html_report(checks, result, meta, exclude, drains, images).encode())
    record.add_file("report.md", report.markdown(checks, result, meta, exclude, drains).encode())
    record.add_file("junit.xml", report.junit(checks, record.run_id))
    record.add_file("exclude.txt", (exclude + "\n" if exclude else "").encode())
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    keys = ("subject", "uuid", "host", "rank", "value", "threshold", "reason")
    flagged = [{"check": c.name, **{k: getattr(c, k) for k in keys}} for c in report.flagged(checks)]
    accept = dict(record.manifest.get("accept") or {})
    accept.update(verdict=result, checks=counts, flagged=flagged, exclude=exclude, drain=drains)
    record.update(accept=accept, summary={"accept": {"verdict": result, **counts, "exclude": exclude}})

    def show() -> None:
        report.console(checks, result, exclude, drains)

    if result == "fail":
        failed = sorted({c.name for c in checks if c.status == "fail"})
        return Outcome("failed", f"acceptance failed: {counts['fail']} checks ({', '.join(failed)})", EXIT_FAILED, show)
    return Outcome("ok", None, EXIT_OK, show)
