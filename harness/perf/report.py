"""What `harness project` prints: the projection per GPU count, the calibration's fits with their
residuals, the predictions of held-out runs with their errors, as plain-text tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.perf.plots import SHORT_DTYPE
from harness.perf.step import BREAKDOWN

GIB = 2**30
SHORT = {"compute_s": "compute", "tp_comm_s": "TP", "cp_comm_s": "CP", "pp_bubble_s": "bubble", "pp_p2p_s": "PP send",
         "dp_comm_exposed_s": "DP exp.", "optimizer_s": "optim."}  # fmt: skip
"""Headers of the breakdown columns (each a share of the step)."""


def text_table(headers: Sequence[str], lines: Sequence[Sequence[str]], *, title: str = "") -> str:
    """Columns padded to their widest cell, the first left-aligned, the others right-aligned."""
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    body = [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(line) for line in lines)]
    return "\n".join(([title] if title else []) + body)


def _layout(row: Mapping[str, Any]) -> str:
    dp = row["dp_shard"] * row["dp_replicate"]
    text = f"{row['tp']}×{row['cp']}×{row['pp']}×{dp}"
    if row["pp"] > 1:
        if row["pp_schedule"] == "interleaved_1f1b":
            text += f" int. v{row['pp_virtual_stages']}"
        else:
            text += f" {row['pp_schedule']}"
        text += f" m{row['pp_microbatches']}"
    return text


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def figure_text(value: float) -> str:
    """1,234 or 98.1 or 0.824: three significant digits, whole numbers with separators."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def projection_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per GPU count: the layout (TP×CP×PP×DP), the step and its breakdown (share of
    the step per part), the FLOP/s, memory and whether it fits."""
    parts = [name for name in BREAKDOWN if any(r[name] for r in rows)]
    headers = ["GPUs", "idle", "TP×CP×PP×DP", "AC", "step s", "TFLOP/s/GPU", "MFU", "PFLOP/s",
               *(f"{SHORT[p]} %" for p in parts), "GiB/GPU", "fits"]  # fmt: skip
    lines = []
    for r in rows:
        memory = r["memory_per_device_bytes"] / GIB
        fits = {True: "yes", False: "NO", None: "?"}[r["fits"]]
        lines.append([f"{r['gpus_requested']:,}", f"{r['gpus_idle']:,}", _layout(r),
                      "on" if r["activation_checkpointing"] else "off", figure_text(r["step_time_s"]),
                      figure_text(r["tflops_per_device"]), _percent(r["mfu"]), figure_text(r["aggregate_pflops"]),
                      *(f"{100 * r[p] / r['step_time_s']:.1f}" for p in parts), f"{memory:,.1f}", fits])  # fmt: skip
    first = rows[0]
    dtype = SHORT_DTYPE.get(first["dtype"], first["dtype"])
    title = (f"projection: {first['model']} on {first['hardware']}, {dtype}, {first['global_batch']:,} sequences of "
             f"{first['seq_len']:,} tokens per step, micro-batch {first['micro_batch']} (model FLOPs 6N'+12LHQT; "
             "a projection, not a measurement)")  # fmt: skip
    return text_table(headers, lines, title=title)


def calibration_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per fitted item: its figures and the fit's residuals."""
    lines = []
    for r in rows:
        if "alpha_us" in r:
            figures = f"α {r['alpha_us']:.3g} µs, β {r['beta_gbps']:.3g} GB/s (bus)"
        elif "best_tflops" in r:
            of_peak = f" ({r['fraction_of_peak']:.0%} of peak)" if r.get("fraction_of_peak") else ""
            threads = f", {r['threads_used']} thread(s)/rank" if r.get("threads_used") else ""
            figures = f"best {r['best_tflops']:.3g} TFLOP/s{of_peak}, t0 {r['fixed_us']:.3g} µs{threads}"
        else:
            figures = f"compute × {r['compute_scale']:.3f} (measured / modelled)"
        lines.append([r["item"], figures, str(r["points"]), _percent(r["rms_error"]), _percent(r["max_abs_error"])])
    return text_table(["fitted", "figures", "points", "rms residual", "max |residual|"], lines,
                      title="calibration (residual: (model − measured) / measured)")  # fmt: skip


def _what(row: Mapping[str, Any]) -> str:
    if row["of"] == "train":
        return f"train {row['engine']}, {row['world_size']} ranks ({row['layout']})"
    if row["of"] == "gemm":
        return f"gemm {row['m']}x{row['n']}x{row['k']} {row['dtype']}"
    place = " in-place" if row.get("in_place") else ""
    return f"{row['of']} {row['bytes']:,} B, {row['group_size']} ranks{place}"


def prediction_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per held-out measurement: measured, predicted, error."""
    lines = [[_what(r), r["figure"], f"{r['measured']:.4g} {r['unit']}", f"{r['predicted']:.4g} {r['unit']}",
              f"{100 * r['error']:+.1f} %", r["run"]] for r in rows]  # fmt: skip
    return text_table(["measured", "figure", "measured", "predicted", "error", "run"], lines,
                      title="predictions of held-out runs (project.check)")  # fmt: skip


def error_lines(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """'check all_reduce: median |error| 6.1 %, max 13.0 % over 8 figures' per predicted kind."""
    return [f"check {kind}: median |error| {100 * s['median_abs_error']:.1f} %, max {100 * s['max_abs_error']:.1f} % "
            f"over {s['count']} figure{'s' if s['count'] != 1 else ''}" for kind, s in summary.items()]  # fmt: skip
