"""PNG figures of the `harness results` commands, from plain series (no knowledge of runs).

matplotlib is imported inside `render_png` (an optional heavy dependency: listing and querying
never pay for it) and drives its own Agg canvas, so no global backend is switched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.catalog.text import size_label

_LINESTYLES = ("-", "--", ":", "-.")
MAX_LEGEND = 16
"""More series than this get no legend (it would hide the plot): the title says how many."""


@dataclass(frozen=True)
class Series:
    """One line or one set of bars."""

    label: str
    x: tuple[Any, ...]
    """Sizes in bytes (style 'size'), category indices ('bars') or datetimes ('time')."""
    y: tuple[float, ...]
    color: int | None = None
    """Colour index (matplotlib's C0..C9), e.g. one per curve; None: the next colour."""
    dashes: int = 0
    """Line style index, e.g. one per run: solid, dashed, dotted, dash-dot."""


@dataclass(frozen=True)
class Panel:
    """One chart of a figure."""

    title: str
    ylabel: str
    series: tuple[Series, ...]
    style: Literal["size", "bars", "time"]
    xlabel: str = ""
    categories: tuple[str, ...] = ()
    """Bar labels, by index ('bars' only)."""


def size_ticks(low: float, high: float, most: int = 12) -> list[int]:
    """Powers of two from `low` to `high`, thinned to at most `most`, landing on 1K, 1M, 1G where the
    stride allows (every 1st, 2nd, 5th or 10th power)."""
    lo = math.floor(math.log2(max(low, 1)))
    hi = math.ceil(math.log2(max(high, 1)))
    for step in (1, 2, 5, 10, 20):
        exps = [e for e in range(lo, hi + 1) if e % step == 0]
        if len(exps) <= most:
            return [2**e for e in exps] or [2**lo]
    return [2**lo, 2**hi]


def render_png(panels: Sequence[Panel], *, title: str | None = None) -> bytes:
    """The panels stacked in one figure, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2 * max(len(panels), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=False):
        _draw(ax, panel)
    if not panels:
        axes[0].text(0.5, 0.5, "nothing to plot", ha="center", va="center", transform=axes[0].transAxes)
    if title:
        fig.suptitle(title)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def _draw(ax: Any, panel: Panel) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    many = len(panel.series) > MAX_LEGEND
    if panel.style == "bars":
        width = 0.8 / max(len(panel.series), 1)
        for i, s in enumerate(panel.series):
            ax.bar([x + (i - (len(panel.series) - 1) / 2) * width for x in s.x], s.y, width, label=s.label)
        ax.set_xticks(range(len(panel.categories)), panel.categories, rotation=30, ha="right", fontsize=8)
    else:
        for s in panel.series:
            color = None if s.color is None else f"C{s.color % 10}"
            ax.plot(s.x, s.y, marker="o", markersize=3, linewidth=1, label=s.label, alpha=0.6 if many else 1.0,
                    color=color, linestyle=_LINESTYLES[s.dashes % len(_LINESTYLES)])  # fmt: skip
    if panel.style == "size":
        xs = [x for s in panel.series for x in s.x]
        ax.set_xscale("log", base=2)
        if xs:
            ax.xaxis.set_major_locator(FixedLocator(size_ticks(min(xs), max(xs))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: size_label(x)))
        ax.xaxis.set_minor_locator(NullLocator())
    if panel.style == "time":
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_title(panel.title + (f" ({len(panel.series)} series)" if many else ""))
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    if panel.series and not many:
        ax.legend(fontsize=8)
