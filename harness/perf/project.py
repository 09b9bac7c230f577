"""`harness project`: for each GPU count, the best (or given) layout's projected step, as rows.

A GPU count that no valid layout can use whole (10,000 = 2⁴·5⁴ with TP 8 × PP 16 and 2,048
sequences) is projected at the largest count at or below it that has one, and the row says how
many GPUs sit idle. Rows are plain dicts with the names training rows use where they exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.errors import ConfigError
from harness.perf.assumptions import DEFAULT, Assumptions
from harness.perf.device import Device
from harness.perf.layout import Layout, layout_problems, validate_layout
from harness.perf.plots import SHORT_DTYPE, breakdown_png, sustained_png
from harness.perf.report import figure_text
from harness.perf.search import plan_layouts, usable_gpu_counts
from harness.perf.shape import ModelShape
from harness.perf.step import StepEstimate, estimate_step
from harness.perf.workload import Workload

__all__ = [
    "breakdown_png", "flops_text", "layout_text", "parse_gpu_counts", "project", "projection_row", "summary_line",
    "sustained_png",
]  # fmt: skip

_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*x\s*(\d+)\s*$")
MAX_COUNTS = 4096


def parse_gpu_counts(spec: str | int | Iterable[int | str]) -> list[int]:
    """'8..16384x2' -> [8, 16, ..., 16384] (geometric, both ends included when reached);
    '1024,10000' or [1024, 10000] -> as given; ConfigError (one line) for anything else."""
    if isinstance(spec, bool):
        raise ConfigError(f"cluster.gpus={spec!r}: give a count, a list or a range like 8..16384x2")
    if isinstance(spec, int | float) or not isinstance(spec, str | Iterable) or isinstance(spec, Mapping):
        values: list[Any] = [spec]
    elif isinstance(spec, str):
        text = spec.strip().strip("[]")
        match = _RANGE.match(text)
        if match:
            start, stop, factor = (int(g) for g in match.groups())
            if start < 1 or stop < start or factor < 2:
                raise ConfigError(
                    f"cluster.gpus={spec!r}: a range is START..STOPxFACTOR with 1 ≤ START ≤ STOP and FACTOR ≥ 2"
                )
            values, n = [], start
            while n <= stop and len(values) < MAX_COUNTS:
                values.append(n)
                n *= factor
        elif ".." in text:
            raise ConfigError(f"cluster.gpus={spec!r}: a range needs its factor, e.g. 8..16384x2")
        else:
            values = [v for v in re.split(r"[,\s]+", text) if v]
    else:
        values = list(spec)
    counts = []
    for value in values:
        try:
            count = int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"cluster.gpus: {value!r} is not a whole number of GPUs") from None
        if count < 1:
            raise ConfigError(f"cluster.gpus: {count} GPUs; a count must be ≥ 1")
        counts.append(count)
    if not counts:
        raise ConfigError("cluster.gpus: no GPU count given")
    return counts


def projection_row(
    estimate: StepEstimate, *, gpus_requested: int, device: Device, model: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The row of one projected point (kind `projection`)."""
    e, w = estimate, estimate.workload
    peak = e.peak_tflops
    return {
        "kind": "projection", "model": model, "hardware": device.name, "dtype": w.dtype,
        "gpus": e.gpus, "gpus_requested": gpus_requested, "gpus_idle": gpus_requested - e.gpus,
        **e.layout.to_row(), "activation_checkpointing": w.activation_checkpointing,
        "seq_len": w.seq_len, "global_batch": w.global_batch, "micro_batch": w.micro_batch,
        "step_time_s": e.step_time_s, "tokens_per_s": e.tokens_per_s,
        "tflops_per_device": e.tflops_per_device, "tflops_per_device_causal": e.tflops_per_device_causal,
        "hw_tflops_per_device": e.hw_tflops_per_device, "mfu": e.mfu, "mfu_causal": e.mfu_causal, "hfu": e.hfu,
        "aggregate_pflops": e.aggregate_pflops,
        "cluster_peak_pflops": peak * gpus_requested / 1e3 if peak else None,
        **e.breakdown(), "bubble_fraction": e.bubble_fraction, "straggler_factor": e.straggler_factor,
        "memory_per_device_bytes": e.memory.total_bytes, "device_capacity_bytes": e.memory.device_capacity_bytes,
        "fits": e.fits,
    }  # fmt: skip


def _with_layout(
    shape: ModelShape, device: Device, workload: Workload, n: int, layout: Layout, gpus_per_node: int,
    assumptions: Assumptions,
) -> StepEstimate:  # fmt: skip
    kwargs = {"seq_len": workload.seq_len, "global_batch": workload.global_batch,
              "micro_batch": workload.micro_batch, "gpus_per_node": gpus_per_node}  # fmt: skip
    if layout.dp_shard != -1:  # fully given: the count must match
        resolved = validate_layout(layout, shape, world_size=n, **kwargs)
        return estimate_step(shape, resolved, workload, device, gpus_per_node=gpus_per_node, assumptions=assumptions)
    fixed = layout.tp * layout.cp * layout.pp * layout.dp_replicate
    for count in [n] + [c for c in usable_gpu_counts(shape, limit=n, gpus_per_node=gpus_per_node,
                                                     workload=workload, layout=layout) if c < n]:  # fmt: skip
        if count % fixed:
            continue
        resolved = layout.resolve(count, global_batch=workload.global_batch, micro_batch=workload.micro_batch)
        if not layout_problems(resolved, shape, world_size=count, **kwargs):
            return estimate_step(shape, resolved, workload, device, gpus_per_node=gpus_per_node,
                                 assumptions=assumptions)  # fmt: skip
    if n % fixed == 0:
        validate_layout(layout, shape, world_size=n, **kwargs)  # no count works: say which rule fails at n
    raise ConfigError(
        f"cluster.gpus={n:,}: no GPU count ≤ {n:,} fits the layout {layout.describe()} with "
        f"train.global_batch={workload.global_batch:,} and train.micro_batch={workload.micro_batch}"
    )


def _best(
    shape: ModelShape, device: Device, workload: Workload, n: int, gpus_per_node: int, assumptions: Assumptions,
    activation_checkpointing: bool | None,
) -> StepEstimate:  # fmt: skip
    lower = [c for c in usable_gpu_counts(shape, limit=n, gpus_per_node=gpus_per_node, workload=workload) if c < n]
    counts = [n, *lower[:24]]
    for count in counts:  # the first count with any valid layout; a best that does not fit says so
        plans = plan_layouts(shape, device, workload, gpus=count, gpus_per_node=gpus_per_node, top=1,
                             activation_checkpointing=activation_checkpointing, include_unfit=True,
                             assumptions=assumptions)  # fmt: skip
        if plans:
            return plans[0].estimate
    raise ConfigError(
        f"cluster.gpus={n:,}: no layout of {shape.n_layers} layers with train.global_batch={workload.global_batch:,}, "
        f"micro_batch={workload.micro_batch} uses any count ≤ {n:,} GPUs"
    )


def project(
    shape: ModelShape, device: Device, workload: Workload, gpus: Sequence[int] | str | int, *,
    gpus_per_node: int = 8, layout: Layout | None = None, model: str | None = None,
    activation_checkpointing: bool | None = None, assumptions: Assumptions = DEFAULT,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per GPU count: the given layout (dp_shard=-1 fills the rest) or the planner's best,
    at the largest usable count ≤ the one asked for. `activation_checkpointing` None lets the
    planner turn it on where a layout does not fit otherwise; with a given layout the workload's
    setting holds."""
    rows = []
    for n in parse_gpu_counts(gpus):
        if layout is not None:
            estimate = _with_layout(shape, device, workload, n, layout, gpus_per_node, assumptions)
        else:
            estimate = _best(shape, device, workload, n, gpus_per_node, assumptions, activation_checkpointing)
        rows.append(projection_row(estimate, gpus_requested=n, device=device, model=model))
    return rows


def flops_text(pflops: float) -> str:
    """PFLOP/s in the unit that suits it: '7.94 EF' from 1 EF up, then '12.3 PF', '45.6 TF', '0.123 TF'."""
    for scale, unit in ((1e3, "EF"), (1.0, "PF")):
        if pflops >= scale:
            return f"{pflops / scale:.3g} {unit}" if pflops / scale < 100 else f"{pflops / scale:,.0f} {unit}"
    return f"{pflops * 1e3:.3g} TF"


def layout_text(row: dict[str, Any]) -> str:
    """'TP 8 × CP 1 × PP 16 × DP 64' of a projection row."""
    return f"TP {row['tp']} × CP {row['cp']} × PP {row['pp']} × DP {row['dp_shard'] * row['dp_replicate']}"


def summary_line(row: dict[str, Any]) -> str:
    """'10,000 × b200, bf16: 7.94 EF sustained of 22.5 EF peak (35.3%)' plus the layout, and the
    idle GPUs when the count could not be used whole."""
    dtype = SHORT_DTYPE.get(row["dtype"], row["dtype"])
    head = f"{row['gpus_requested']:,} × {row['hardware']}, {dtype}: {flops_text(row['aggregate_pflops'])} sustained"
    if row.get("cluster_peak_pflops"):
        peak = row["cluster_peak_pflops"]
        head += f" of {flops_text(peak)} peak ({row['aggregate_pflops'] / peak:.1%})"
    layout = layout_text(row)
    if row["pp"] > 1:
        virtual = f", v {row['pp_virtual_stages']}" if row["pp_schedule"] == "interleaved_1f1b" else ""
        layout += f" ({row['pp_schedule']}{virtual}, m {row['pp_microbatches']})"
    rate = figure_text(row["tflops_per_device"])
    tail = f"; {rate} TFLOP/s per GPU (model FLOPs 6N'+12LHQT), {layout}"
    if row["gpus_idle"]:
        tail += f"; projected on {row['gpus']:,} GPUs, {row['gpus_idle']:,} idle"
    if row.get("fits") is False:
        tail += "; does NOT fit in memory"
    return head + tail
