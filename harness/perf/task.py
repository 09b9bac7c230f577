"""`harness project`: how close a cluster gets to a FLOP/s target on a model, and where the time
goes, projected by the cost model of this package (docs/projection.md).

    harness project model=llama3-70b hardware=b200 cluster.gpus=8..16384x2 train.seq_len=8192 \\
        train.global_batch=2048 train.micro_batch=1 train.dtype=bf16

validate does the whole projection. It is arithmetic on shapes (under a second for a 12-point
curve at 16,384 GPUs), it creates nothing, and every refusal it can end in (a GPU count the given
layout cannot use, a profile without network figures, a calibration run of another device or
benchmark, a corrupt one) must come before a run directory exists. The plan carries the rows; run
records them, draws the two plots and prints the table and the summary line.

Layout: with any parallel.* key away from its default, that layout (dp_shard=-1 fills the count
with data parallelism); a layout with dp_shard given fixes the GPU count, and another count is
refused. Without parallel.*, the planner's best layout per count. A count no layout can use
whole (10,000 = 2⁴·5⁴ with TP 8 × PP 16 and 2,048 sequences) is projected at the largest count
below it that one can, and the row says how many GPUs sit idle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness import devices, display, hardware
from harness.config.job import Job
from harness.config.schema import ModelConfig, ParallelConfig, RunConfig
from harness.config.validate import int_at_least
from harness.errors import ConfigError
from harness.perf.calibrate import read_measured
from harness.perf.layout import Layout, check_degrees
from harness.perf.measured import assumptions_for, calibrated_device, error_summary, predictions
from harness.perf.plots import SHORT_DTYPE
from harness.perf.project import breakdown_png, layout_text, parse_gpu_counts, project, summary_line, sustained_png
from harness.perf.report import calibration_table, error_lines, prediction_table, projection_table
from harness.perf.shape import ModelShape, shape_from_mapping
from harness.perf.workload import Workload
from harness.results import RunRecord
from harness.tasks import Outcome


@dataclass(frozen=True)
class ProjectPlan:
    """A projection, done: its rows, and the calibration's when there was one."""

    rows: tuple[dict[str, Any], ...]
    """One `projection` row per GPU count asked for."""
    calibration: tuple[dict[str, Any], ...] = ()
    """One `calibration` row per fitted item (project.calibrate)."""
    predictions: tuple[dict[str, Any], ...] = ()
    """One `prediction` row per held-out measurement (project.check)."""


def model_shape(model: ModelConfig) -> ModelShape:
    """The shape of model.*, with each size ≥ 1 and the heads dividing evenly (ConfigError)."""
    for key in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim"):
        int_at_least(f"model.{key}", getattr(model, key), 1)
    if model.dim % model.n_heads or model.n_heads % model.n_kv_heads:
        raise ConfigError(f"model.dim={model.dim}, n_heads={model.n_heads}, n_kv_heads={model.n_kv_heads}: the heads "
                          "must divide dim and the KV heads the heads")  # fmt: skip
    return shape_from_mapping(dataclasses.asdict(model))


def workload(cfg: RunConfig) -> Workload:
    """train.* as the step the projection costs."""
    t = cfg.train
    if t.global_batch == 0:
        raise ConfigError("train.global_batch=0: a projection needs the sequences per step, e.g. "
                          "train.global_batch=2048 (Llama 3: 2,048 sequences of 8,192 tokens)")  # fmt: skip
    return Workload(seq_len=t.seq_len, global_batch=t.global_batch, micro_batch=t.micro_batch, dtype=t.dtype,
                    activation_checkpointing=t.activation_checkpointing)  # fmt: skip


def given_layout(parallel: ParallelConfig) -> Layout | None:
    """The layout of parallel.*, or None when every key is at its default (the planner chooses)."""
    values = {f.name: getattr(parallel, f.name) for f in dataclasses.fields(ParallelConfig)}
    if all(values[f.name] == f.default for f in dataclasses.fields(ParallelConfig)):
        return None
    layout = Layout(**values)
    check_degrees(layout)
    return layout


def check_fixed_size(layout: Layout, counts: list[int]) -> None:
    """A layout with dp_shard given uses exactly its product of GPUs: refuse another count."""
    if layout.dp_shard == -1:
        return
    size = layout.world_size
    for n in counts:
        if n != size:
            what = "is not divisible by the layout" if n % size else "is not the layout's size"
            raise ConfigError(
                f"cluster.gpus={n:,} {what}: parallel.* fixes dp_replicate {layout.dp_replicate} × dp_shard "
                f"{layout.dp_shard} × tp {layout.tp} × pp {layout.pp} × cp {layout.cp} = {size:,} GPUs "
                f"({n:,} / {size:,} = {n / size:.4g}); project cluster.gpus={size:,}, or leave "
                "parallel.dp_shard at -1 to fill the count with data parallelism"
            )


def validate(job: Job) -> ProjectPlan:
    """The projection, pure: every refusal is one line (exit 2) before anything is written."""
    cfg = job.config
    if cfg.cluster.gpus is None:
        raise ConfigError("cluster.gpus is not set: give the GPU count(s) to project, e.g. cluster.gpus=10000, "
                          "cluster.gpus=[1024,10000] or cluster.gpus=8..16384x2")  # fmt: skip
    counts = parse_gpu_counts(cfg.cluster.gpus)
    per_node = int_at_least("cluster.gpus_per_node", cfg.cluster.gpus_per_node, 1)
    shape, work, layout = model_shape(cfg.model), workload(cfg), given_layout(cfg.parallel)
    if layout is not None:
        check_fixed_size(layout, counts)
    name = devices.device_name(job.device_type) if cfg.hardware.name == "auto" else ""
    profile = hardware.resolve(cfg.hardware, name, job.device_type)
    runs = [read_measured(path, key="project.calibrate") for path in cfg.project.calibrate]
    held_out = [read_measured(path, key="project.check") for path in cfg.project.check]
    assumptions = assumptions_for(profile)
    device, calibration = calibrated_device(profile, runs, gpus_per_node=per_node, assumptions=assumptions)
    recompute = True if work.activation_checkpointing else None  # the planner may turn it on where needed
    rows = project(shape, device, work, counts, gpus_per_node=per_node, layout=layout, model=cfg.model.name,
                   activation_checkpointing=recompute, assumptions=assumptions)  # fmt: skip
    return ProjectPlan(tuple(rows), tuple(calibration.to_rows() if calibration else ()),
                       tuple(predictions(held_out, device, calibration, assumptions=assumptions)))  # fmt: skip


def summary(plan: ProjectPlan) -> dict[str, Any]:
    """The manifest's summary: the answer at the largest count asked for, the calibration's
    residuals and the predictions' errors."""
    row = max(plan.rows, key=lambda r: r["gpus_requested"])
    out: dict[str, Any] = {"projection": {
        "aggregate_pflops": row["aggregate_pflops"], "dtype": row["dtype"], "gpus_requested": row["gpus_requested"],
        "gpus": row["gpus"], "gpus_idle": row["gpus_idle"], "cluster_peak_pflops": row["cluster_peak_pflops"],
        "mfu": row["mfu"], "tflops_per_device": row["tflops_per_device"], "layout": layout_text(row),
        "line": summary_line(row),
    }}  # fmt: skip
    if plan.calibration:
        out["calibration"] = {r["item"]: {k: v for k, v in r.items() if k not in ("kind", "passed", "item")}
                              for r in plan.calibration}  # fmt: skip
    if plan.predictions:
        out["predictions"] = error_summary(plan.predictions)
    return out


def run(job: Job, ctx: None, record: RunRecord | None) -> Outcome:
    """Record the rows, the plots and the summary; show the tables and the summary line."""
    plan: ProjectPlan = job.plan
    rows = [dict(r) for r in plan.rows]
    found = summary(plan)
    if record:
        record.add_rows([{**r, "passed": True} for r in rows] + [dict(r) for r in (*plan.calibration,
                                                                                    *plan.predictions)])  # fmt: skip
        first = rows[0]
        name = f"{first['model']} on {first['hardware']}, {SHORT_DTYPE.get(first['dtype'], first['dtype'])}"
        record.add_file("sustained.png", sustained_png(rows, title=f"Projected sustained throughput: {name}"))
        record.add_file("breakdown.png", breakdown_png(rows, title=f"Where a projected step's time goes: {name}"))
        record.update(summary=found)

    def show() -> None:
        for text in (projection_table(rows), plan.calibration and calibration_table(plan.calibration),
                     plan.predictions and prediction_table(plan.predictions)):  # fmt: skip
            if text:
                display.console.print(text + "\n", markup=False)
        for line in (*error_lines(found.get("predictions", {})), found["projection"]["line"]):
            display.console.print(line, markup=False)

    return Outcome(show=show)
