"""The projection's two plots, as PNG bytes: sustained PFLOP/s against GPUs (with the peak and a
0.5 EF line) and the stacked time breakdown of a step against GPUs. matplotlib is imported inside
each function (Agg backend), so the cost model itself needs none of it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from harness.perf.step import BREAKDOWN

EXAFLOP_LINE_PFLOPS = 500.0
"""The 0.5 EF mark, in PFLOP/s."""
SHORT_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8": "fp8"}
LABELS = {
    "compute_s": "compute (GEMM, attention, element-wise)", "tp_comm_s": "TP collectives", "cp_comm_s": "CP K/V gather",
    "pp_bubble_s": "pipeline bubble", "pp_p2p_s": "pipeline send/recv", "dp_comm_exposed_s": "DP/FSDP (exposed)",
    "optimizer_s": "optimizer step",
}  # fmt: skip


def gpu_label(n: float) -> str:
    """8, 64, 512, 4K, 16K, 10,000."""
    n = int(float(n) + 0.5)
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return f"{n:,}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def sustained_png(rows: Sequence[dict[str, Any]], *, title: str | None = None) -> bytes:
    """Sustained model PFLOP/s against the GPUs asked for, per (model, dtype) series, with each
    series' peak and the 0.5 EF line; log-log axes."""
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault((row.get("model"), row.get("hardware"), row["dtype"]), []).append(row)
    xs_all: set[int] = set()
    for (model, hardware, dtype), points in series.items():
        points = sorted(points, key=lambda r: r["gpus_requested"])
        xs = [r["gpus_requested"] for r in points]
        xs_all.update(xs)
        name = " ".join(str(p) for p in (model, hardware, SHORT_DTYPE.get(dtype, dtype)) if p)
        line = ax.plot(xs, [r["aggregate_pflops"] for r in points], marker="o", label=f"{name}: sustained")[0]
        if all(r.get("cluster_peak_pflops") for r in points):
            ax.plot(xs, [r["cluster_peak_pflops"] for r in points], linestyle="--", color=line.get_color(),
                    alpha=0.6, label=f"{name}: datasheet peak")  # fmt: skip
        unfit = [r for r in points if r.get("fits") is False]
        if unfit:
            ax.scatter([r["gpus_requested"] for r in unfit], [r["aggregate_pflops"] for r in unfit], s=60,
                       facecolors="white", edgecolors=line.get_color(), zorder=3,
                       label=f"{name}: does not fit in memory")  # fmt: skip
        idle = [r for r in points if r.get("gpus_idle")]
        if idle:
            ax.scatter([r["gpus_requested"] for r in idle], [r["aggregate_pflops"] for r in idle], marker="x",
                       color="black", zorder=3, label="GPUs left idle (no layout uses them all)")  # fmt: skip
    ax.axhline(EXAFLOP_LINE_PFLOPS, color="red", linestyle=":", label="0.5 EF (500 PFLOP/s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted(xs_all)
    if len(ticks) > 12:
        ticks = ticks[:: max(1, len(ticks) // 8)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: gpu_label(v)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    dtypes = sorted({SHORT_DTYPE.get(r["dtype"], r["dtype"]) for r in rows})
    ax.set_xlabel("GPUs")
    ax.set_ylabel(f"PFLOP/s, {'/'.join(dtypes)} (model FLOPs 6N'+12LHQT)")
    ax.set_title(title or "Projected sustained training throughput (a projection, not a measurement)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def breakdown_png(rows: Sequence[dict[str, Any]], *, title: str | None = None) -> bytes:
    """Stacked share of each part of the step against the GPUs asked for; the step time is written
    above each bar (one series: the rows of one model, hardware and dtype)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) + 2), 5))
    rows = sorted(rows, key=lambda r: r["gpus_requested"])
    positions = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    for name in BREAKDOWN:
        shares = [100 * r[name] / r["step_time_s"] for r in rows]
        if not any(shares):
            continue
        ax.bar(positions, shares, bottom=bottom, label=LABELS[name])
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    for x, row in zip(positions, rows, strict=True):
        seconds = row["step_time_s"]
        text = f"{seconds:,.0f} s" if seconds >= 100 else f"{seconds:.3g} s"
        ax.text(x, 101, text, ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(positions, [gpu_label(r["gpus_requested"]) for r in rows])
    ax.set_ylim(0, 118)
    ax.set_xlabel("GPUs")
    ax.set_ylabel("share of the step time (%)")
    ax.set_title(title or "Where a projected step's time goes (step time above each bar)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(fig)
