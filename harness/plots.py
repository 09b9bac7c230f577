"""Plots for a run directory (PNG, matplotlib without a display): bus bandwidth against message
size per collective, TFLOP/s per matmul shape and dtype, memory GB/s per kernel. People look at
plots rather than tables; these are what nccl-tests and mamf-finder users draw by hand."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from harness.units import COLLECTIVE_OPS, format_bytes

COLLECTIVES = set(COLLECTIVE_OPS)


def _bytes_axis(ax: Any) -> None:
    """A log2 axis of byte sizes that reads 1K, 1M, 1G (binary, as the sizes were asked for)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: format_bytes(int(value)) if value >= 1 else ""))


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def busbw_plot(rows_by_bench: dict[str, list[dict]]) -> bytes | None:
    """busbw (GB/s) against message size per op, or None without rows: the plot of a collectives run."""
    series: dict[str, list[tuple[int, float]]] = {}
    dashed: set[str] = set()
    ops, worlds, dtypes = set(), set(), set()
    for name, rows in rows_by_bench.items():
        if name not in COLLECTIVES:
            continue
        for row in rows:
            if row.get("busbw_gbps") is None:
                continue
            label = f"{name} {row['dtype']}" + (f" {row['redop']}" if row.get("redop") not in (None, "sum") else "")
            label += " in-place" if row["in_place"] else ""
            label += f" g{row['group']}" if row.get("group") else ""
            series.setdefault(label, []).append((row["bytes"], row["busbw_gbps"]))
            ops.add(name)
            worlds.add(row.get("group_size") or row.get("world_size"))
            dtypes.add(row["dtype"])
            if row["in_place"]:
                dashed.add(label)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in sorted(series.items()):
        points.sort()
        style = "--" if label in dashed else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", markersize=3, label=label)
    _bytes_axis(ax)
    ax.set_xlabel("message size (bytes, binary multiples)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ranks = ", ".join(str(w) for w in sorted(w for w in worlds if w))
    ax.set_title(f"{', '.join(sorted(ops))}: bus bandwidth against message size\n"
                 f"{ranks} ranks per communicator, {', '.join(sorted(dtypes))}")  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def gemm_plot(rows: list[dict]) -> bytes | None:
    """Achieved TFLOP/s per GEMM shape and dtype, with the datasheet peak where known; None without rows."""
    if not rows:
        return None
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(shapes) * len(dtypes)), 5))
    width = 0.8 / len(dtypes)
    for i, dtype in enumerate(dtypes):
        # A node is as fast as its slowest GPU: plot each shape's slowest rank.
        values = [min((r["tflops"] or 0 for r in rows if r["dtype"] == dtype and r["shape"] == s), default=0)
                  for s in shapes]  # fmt: skip
        bars = ax.bar([x + i * width for x in range(len(shapes))], values, width, label=dtype)
        peak = next((r.get("peak_tflops") for r in rows if r["dtype"] == dtype and r.get("peak_tflops")), None)
        if peak:  # the datasheet peak of this dtype, in the bars' colour
            ax.axhline(peak, color=bars.patches[0].get_facecolor(), linestyle="--", linewidth=1,
                       label=f"{dtype} datasheet peak {peak:g}")  # fmt: skip
    ax.set_xticks([x + width * (len(dtypes) - 1) / 2 for x in range(len(shapes))], shapes, rotation=45, ha="right")
    ax.set_xlabel("matmul shape m×n×k")
    ax.set_ylabel("TFLOP/s (slowest rank)")
    ax.set_title("GEMM throughput per shape and dtype (a node is as fast as its slowest GPU)")
    ax.legend(fontsize=8)
    return _png(fig)


def memory_plot(rows: list[dict]) -> bytes | None:
    """Memory bandwidth (GB/s) per STREAM kernel, one bar per rank; None without rows."""
    if not rows:
        return None
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    ranks = sorted({r["rank"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(ranks)
    for i, rank in enumerate(ranks):
        values = [next((r["gbps"] or 0 for r in rows if r["kernel"] == k and r["rank"] == rank), 0) for k in kernels]
        ax.bar([x + i * width for x in range(len(kernels))], values, width, label=f"rank {rank}")
    ax.set_xticks([x + width * (len(ranks) - 1) / 2 for x in range(len(kernels))], kernels)
    ax.set_ylabel("GB/s (read + written)")
    ax.set_title("memory: STREAM kernels per rank")
    if len(ranks) <= 16:
        ax.legend(fontsize=7)
    return _png(fig)


def render(rows_by_bench: dict[str, list[dict]]) -> dict[str, bytes]:
    """{file name: PNG bytes} for what the run measured."""
    made = {
        "busbw.png": busbw_plot(rows_by_bench),
        "gemm_tflops.png": gemm_plot(rows_by_bench.get("gemm", [])),
        "memory_gbps.png": memory_plot(rows_by_bench.get("memory", [])),
    }
    return {name: png for name, png in made.items() if png}


MAX_BARS = 128
"""Above this many GPUs or nodes, one bar each would be unreadable (and a 10,000-bar PNG takes
minutes): the figures are drawn sorted instead, with the flagged ones marked and named."""
MAX_NAMED = 20


def figure_bars(title: str, unit: str, bars: list[tuple[str, float, bool]], lines: dict[str, float]) -> bytes:
    """One bar per GPU or node (red when flagged) with the gate's lines drawn across
    (e.g. {'threshold': 741.8, 'outlier limit': 700.1}): acceptance's per-GPU/per-node view.
    Past MAX_BARS, the values sorted from lowest, at a fixed size, flagged ones red and named."""
    if len(bars) <= MAX_BARS:
        fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(bars) + 2), 4))
        ax.bar(range(len(bars)), [b[1] for b in bars], color=["#c0392b" if b[2] else "#2e86c1" for b in bars])
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=60 if len(bars) > 8 else 0, ha="right",
                      fontsize=7)  # fmt: skip
    else:
        ranked = sorted(bars, key=lambda b: b[1])
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.plot(range(len(ranked)), [b[1] for b in ranked], color="#2e86c1", linewidth=1)
        bad = [(i, b) for i, b in enumerate(ranked) if b[2]]
        if bad:
            ax.scatter([i for i, _ in bad], [b[1] for _, b in bad], color="#c0392b", s=12, zorder=3,
                       label=f"flagged: {len(bad)}")  # fmt: skip
        for i, b in bad[:MAX_NAMED]:  # the lowest ones; the report's table lists them all
            ax.annotate(b[0], (i, b[1]), fontsize=6, rotation=30, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{len(ranked):,} subjects, sorted by value")
    for (label, value), style in zip(lines.items(), ("-", "--", ":"), strict=False):
        ax.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{label} {value:.4g}")
    ax.set_ylabel(unit)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _png(fig)
