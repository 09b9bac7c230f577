"""Measured runs as the cost model sees them: the calibrated device, the compute scale fitted to
training runs, and the model's predictions of held-out runs with their errors.

A `harness train` run is modelled from its manifest alone: the model's shape (config.model), the
workload (config.train), the resolved layout the run recorded (manifest train.layout), its ranks
per node (world size / hosts). DDP and DeepSpeed ZeRO 0-2 reduce gradients with an all-reduce
(ZeRO-1/2's reduce-scatter + all-gather moves the same bytes), so they are costed as replicas
(dp_replicate); FSDP and ZeRO-3 as shards (dp_shard). The measured step is the median after the
warm-up steps.

On a CPU a rank is as fast as the threads it runs (manifest devices[].threads_used): compute
time is taken as inversely proportional to them, relative to the threads of the gemm runs the
device was calibrated on (a 1-rank run on 2 cores uses 2 threads, each of 2 ranks 1). And a CPU
rank's own cores run gloo's collectives and sends, so nothing of them hides behind its compute
(`CPU_ASSUMPTIONS`).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.hardware import Profile
from harness.perf import comm
from harness.perf.assumptions import DEFAULT, Assumptions
from harness.perf.calibrate import (
    COLLECTIVE_OPS,
    Calibration,
    MeasuredRun,
    calibrate,
    check_rows,
    device_from_calibration,
    fit_compute_scale,
)
from harness.perf.compute import Gemm, gemm_time_s
from harness.perf.device import Device, device_from_profile, with_overrides
from harness.perf.layout import Layout
from harness.perf.shape import ModelShape, shape_from_mapping
from harness.perf.step import StepEstimate, estimate_step
from harness.perf.workload import Workload
from harness.results import row_kind
from harness.units import bus_factor

CPU_ASSUMPTIONS = dataclasses.replace(DEFAULT, dp_overlap=0.0, pp_p2p_overlap=0.0)
"""The model's constants for CPU ranks: their collectives take the cores their compute needs."""


def assumptions_for(profile: Profile) -> Assumptions:
    """CPU_ASSUMPTIONS for the cpu profile, the documented defaults otherwise."""
    return CPU_ASSUMPTIONS if profile.name == "cpu" else DEFAULT


@dataclass(frozen=True)
class TrainCase:
    """One measured `harness train` run, as the cost model costs it."""

    run: str
    engine: str
    shape: ModelShape
    layout: Layout
    """Resolved; replicas for DDP and ZeRO 0-2, shards for FSDP and ZeRO-3."""
    workload: Workload
    ranks_per_node: int
    threads: int | None
    """CPU threads per rank (None on GPUs)."""
    measured_s: float
    """Median step time after the warm-up steps, seconds."""

    def estimate(self, device: Device, *, gemm_threads: int | None, assumptions: Assumptions = DEFAULT) -> StepEstimate:
        """The model's step of this run on `device` (calibrated on runs of `gemm_threads` threads)."""
        if self.threads and gemm_threads:
            device = with_overrides(device, compute_scale=device.compute_scale * gemm_threads / self.threads)
        return estimate_step(self.shape, self.layout, self.workload, device, gpus_per_node=self.ranks_per_node,
                             assumptions=assumptions, advise=False)  # fmt: skip


def train_case(run: MeasuredRun, *, key: str = "project.calibrate") -> TrainCase:
    """The train run `run` as a TrainCase; ConfigError when it holds no measured steps or its
    manifest lacks what costing it needs (config.model, config.train)."""
    try:
        return _train_case(run, key)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{key}: {run.path} is a train run whose manifest the model cannot cost "
                          f"({type(error).__name__}: {error})") from None  # fmt: skip


def _train_case(run: MeasuredRun, key: str) -> TrainCase:
    config = run.manifest.get("config") or {}
    train, engine = config.get("train") or {}, config.get("engine") or {}
    steps = [float(r["step_time_s"]) for r in run.rows
             if row_kind(r) == "train" and r.get("step_time_s") and not r.get("warmup")]  # fmt: skip
    if not steps or "model" not in config:
        raise ConfigError(f"{key}: {run.path} has no measured train steps (rows with step_time_s after warm-up)")
    world = run.world_size
    recorded = (run.manifest.get("train") or {}).get("layout") or {}
    names = {f.name for f in dataclasses.fields(Layout)}
    layout = Layout(**{k: v for k, v in recorded.items() if k in names})
    micro = int(train.get("micro_batch") or 1)
    if layout.dp_shard == -1 or layout.pp_microbatches is None:  # a run recorded before layouts
        layout = layout.resolve(world, global_batch=train.get("global_batch") or micro * world, micro_batch=micro)
    name = str(engine.get("name") or "")
    if name == "ddp" or (name == "deepspeed" and int(engine.get("zero_stage") or 0) < 3):
        layout = dataclasses.replace(layout, dp_replicate=layout.dp, dp_shard=1)
    workload = Workload(seq_len=int(train["seq_len"]), global_batch=int(train.get("global_batch") or micro * layout.dp),
                        micro_batch=micro, dtype=str(train.get("dtype") or "float32"),
                        activation_checkpointing=bool(train.get("activation_checkpointing")))  # fmt: skip
    nodes = max(1, int(run.rows[0].get("nodes") or 1))
    # The summary's median covers every step after warmup; the train rows only the recorded ones
    # (every train.log_every-th), so they stand in only for a run without a summary.
    summary = next((r for r in run.rows if row_kind(r) == "train_summary" and r.get("step_time_s")), None)
    measured = float(summary["step_time_s"]) if summary else statistics.median(steps)
    return TrainCase(run=run.name, engine=name, shape=shape_from_mapping(config["model"]), layout=layout,
                     workload=workload, ranks_per_node=max(1, world // nodes), threads=run.rows[0].get("threads_used"),
                     measured_s=measured)  # fmt: skip


def base_device(profile: Profile, calibration: Calibration | None, *, gpus_per_node: int) -> Device:
    """The device of `profile` with the calibration's fits on it. A profile without network
    figures (cpu) is refused without calibration; with it the fits stand in for the datasheet."""
    if calibration is None:
        return device_from_profile(profile)
    try:
        device = device_from_profile(profile)
    except ConfigError:
        fitted = device_from_calibration(calibration, name=profile.name, memory_gib=profile.memory_gib,
                                         memory_tbps=profile.memory_tbps, ranks_per_node=gpus_per_node)  # fmt: skip
        return with_overrides(fitted, peak_tflops=dict(profile.peak_tflops))
    return calibration.apply(device)


def calibrated_device(
    profile: Profile, runs: Sequence[MeasuredRun], *, gpus_per_node: int, assumptions: Assumptions = DEFAULT,
) -> tuple[Device, Calibration | None]:  # fmt: skip
    """The device to project with, and the calibration fitted to `runs` (None without runs):
    collectives and GEMMs from bench rows, then the compute scale from train runs on that device."""
    if not runs:
        return base_device(profile, None, gpus_per_node=gpus_per_node), None
    for run in runs:
        check_rows(run.rows, device=profile.name, source=run.path)
    bench_rows = [r for run in runs for r in run.rows if row_kind(r) in (*COLLECTIVE_OPS, "gemm")]
    calibration = calibrate(bench_rows, device=profile.name, peak_tflops=profile.peak_tflops)
    device = base_device(profile, calibration, gpus_per_node=gpus_per_node)
    cases = [train_case(run) for run in runs if any(row_kind(r) == "train" for r in run.rows)]
    if not cases:
        return device, calibration
    points = []
    for case in cases:
        estimate = case.estimate(device, gemm_threads=calibration.gemm_threads, assumptions=assumptions)
        points.append((case.measured_s, estimate.compute_s, estimate.step_time_s - estimate.compute_s))
    scale, residuals = fit_compute_scale(points)
    calibration = dataclasses.replace(calibration, compute_scale=scale, compute_residuals=residuals)
    return with_overrides(device, compute_scale=device.compute_scale * scale), calibration


def _collective_busbw(row: Mapping[str, Any], device: Device) -> float:
    op, size, n = str(row_kind(row)), float(row["bytes"]), int(row.get("group_size") or row["world_size"])
    nodes = max(1, min(n, int(row.get("nodes") or 1)))
    if op == "sendrecv":
        seconds = comm.p2p_time_s(size, same_domain=nodes == 1, device=device)
    else:
        seconds = comm.collective_time_s(op, size, comm.Span(n, -(-n // nodes), nodes), device)
    return size / seconds / 1e9 * bus_factor(op, n)


def predictions(
    runs: Iterable[MeasuredRun], device: Device, calibration: Calibration | None, *,
    assumptions: Assumptions = DEFAULT,
) -> list[dict[str, Any]]:  # fmt: skip
    """Rows (kind `prediction`) of what the model predicts for each measured figure of `runs`:
    busbw of each collective row, TFLOP/s of each gemm row, the median step time of each train
    run; `error` is predicted / measured − 1 (`abs_error` its size)."""
    gemm_threads = calibration.gemm_threads if calibration else None
    out: list[dict[str, Any]] = []
    for run in runs:
        check_rows(run.rows, device=device.name, source=run.path, key="project.check")
        base = {"kind": "prediction", "passed": True, "run": run.name}
        for row in run.rows:
            kind = row_kind(row)
            if kind in COLLECTIVE_OPS and row.get("busbw_gbps") and row.get("passed", True):
                out.append({**base, "of": kind, "figure": "busbw_gbps", "unit": "GB/s", "bytes": row["bytes"],
                            "group_size": row.get("group_size") or row["world_size"], "in_place": row.get("in_place"),
                            "measured": row["busbw_gbps"], "predicted": _collective_busbw(row, device)})  # fmt: skip
            elif kind == "gemm" and row.get("tflops") and row.get("passed", True):
                gemm = Gemm("check", int(row["m"]), int(row["n"]), int(row["k"]))
                seconds = gemm_time_s(gemm, device, str(row["dtype"]), assumptions)
                out.append({**base, "of": "gemm", "figure": "tflops", "unit": "TFLOP/s", "dtype": row["dtype"],
                            "m": gemm.m, "n": gemm.n, "k": gemm.k, "measured": row["tflops"],
                            "predicted": gemm.flops / seconds / 1e12})  # fmt: skip
        if any(row_kind(r) == "train" for r in run.rows):
            case = train_case(run, key="project.check")
            estimate = case.estimate(device, gemm_threads=gemm_threads, assumptions=assumptions)
            out.append({**base, "of": "train", "figure": "step_time_s", "unit": "s", "engine": case.engine,
                        "world_size": case.layout.world_size, "layout": case.layout.describe(),
                        "measured": case.measured_s, "predicted": estimate.step_time_s})  # fmt: skip
    for row in out:
        row["error"] = row["predicted"] / row["measured"] - 1
        row["abs_error"] = abs(row["error"])
    return out


def error_summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Per predicted kind (all_reduce, gemm, train, ...): how many, the median and the largest
    absolute relative error."""
    by_kind: dict[str, list[float]] = {}
    for row in rows:
        by_kind.setdefault(str(row["of"]), []).append(float(row["abs_error"]))
    return {kind: {"count": len(errors), "median_abs_error": statistics.median(errors),
                   "max_abs_error": max(errors)} for kind, errors in by_kind.items()}  # fmt: skip
