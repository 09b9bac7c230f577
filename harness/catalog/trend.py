"""`harness results trend`: one metric against time, per host or per GPU, over many runs.

For example the bf16 gemm TFLOP/s of every GPU over its acceptance runs, so that a node that
degrades is seen before it fails: `trend(runs, "gemm.tflops", kinds, by="gpu", where={"dtype": "bfloat16"})`.
A GPU is its UUID where the row or the manifest's device has one, else `host:rank`.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from harness.catalog.filters import config_matches
from harness.catalog.plots import Panel, Series, render_png
from harness.catalog.text import table
from harness.errors import ConfigError
from harness.results.kinds import Metric, RowKind, row_kind
from harness.results.read import DamagedRun, RunRef, parse_time, read_manifest, read_rows, run_path


@dataclass(frozen=True)
class TrendPoint:
    """The metric of one subject in one run (the median, or max, over that subject's rows)."""

    subject: str
    run_id: str
    time: datetime
    """The run's start."""
    value: float

    def to_row(self) -> dict[str, Any]:
        return {"subject": self.subject, "of_run": self.run_id, "time": self.time.isoformat(), "value": self.value}


@dataclass(frozen=True)
class Trend:
    """A metric over time per subject."""

    kind: str
    metric: Metric
    by: str
    points: tuple[TrendPoint, ...]
    """Sorted by subject, then time."""
    where: tuple[tuple[str, str], ...] = ()
    """The row filter the points were taken with (shown in the plot's title)."""

    def only(self, keep: Callable[[TrendPoint], bool]) -> Trend:
        """The trend of the points `keep` accepts (results.host)."""
        return dataclasses.replace(self, points=tuple(p for p in self.points if keep(p)))

    def series(self) -> dict[str, list[TrendPoint]]:
        out: dict[str, list[TrendPoint]] = {}
        for point in self.points:
            out.setdefault(point.subject, []).append(point)
        return out

    def table(self) -> str:
        """Per subject: runs, first and latest value, and the latest against the median of the
        earlier ones; the most degraded subject first."""
        lines = []
        for subject, points in self.series().items():
            earlier = [p.value for p in points[:-1]]
            change = points[-1].value / statistics.median(earlier) if earlier and statistics.median(earlier) else None
            lines.append([subject, len(points), points[0].value, points[-1].value, change])
        sign = 1 if self.metric.higher_is_better else -1
        lines.sort(key=lambda r: (r[4] is None, sign * (r[4] or 0)))
        name = f"{self.kind}.{self.metric.name} ({self.metric.unit})"
        return table([self.by, "runs", f"first {name}", "latest", "latest / median before"], lines)

    def plot(self) -> bytes:
        """A line per subject against the runs' start times (UTC)."""
        series = tuple(Series(s, tuple(p.time for p in pts), tuple(p.value for p in pts))
                       for s, pts in self.series().items())  # fmt: skip
        unit = f" ({self.metric.unit})" if self.metric.unit else ""
        where = ", ".join(f"{k}={v}" for k, v in self.where)
        title = f"{self.kind} {self.metric.name} per {self.by} over time" + (f" ({where})" if where else "")
        panel = Panel(title, f"{self.metric.name}{unit}", series, "time", xlabel="run start (UTC)")
        return render_png([panel])


def resolve_metric(metric: str, kinds: Mapping[str, RowKind]) -> tuple[RowKind, Metric]:
    """'gemm.tflops' or 'tflops' (when one kind declares it) -> (kind, metric); ConfigError otherwise."""
    kind_name, _, name = metric.rpartition(".")
    candidates = [kinds[kind_name]] if kind_name in kinds else [] if kind_name else list(kinds.values())
    found = [(k, m) for k in candidates if (m := k.metric(name)) is not None]
    if len(found) == 1:
        return found[0]
    known = ", ".join(f"{k.kind}.{m.name}" for k in kinds.values() for m in k.metrics)
    why = "is ambiguous" if found else "is not a declared metric"
    raise ConfigError(f"results.metric={metric!r} {why}; known: {known}")


def _subject(row: Mapping[str, Any], manifest: Mapping[str, Any], by: str) -> str:
    devices = {d.get("rank"): d for d in manifest.get("devices") or [] if isinstance(d, Mapping)}
    device = devices.get(row.get("rank"), {})
    hosts = manifest.get("hosts") or ["unknown"]
    host = str(row.get("host") or device.get("host") or hosts[0])
    if by == "host":
        return host
    return str(row.get("uuid") or device.get("uuid") or f"{host}:{row.get('rank', 0)}")


def trend(
    runs: Sequence[RunRef],
    metric: str,
    kinds: Mapping[str, RowKind],
    *,
    by: Literal["host", "gpu"] = "host",
    where: Mapping[str, str] | None = None,
    agg: Literal["median", "max"] = "median",
) -> Trend:
    """`metric` ('kind.metric') of each subject in each run against the run's start time.

    `where` keeps rows whose fields match (values as on the command line, e.g. {'dtype': 'bfloat16'}).
    Runs without a readable manifest or start time are skipped; rows that failed their check too.
    """
    if by not in ("host", "gpu"):
        raise ConfigError(f"trend by {by!r}: use host or gpu")
    kind, found = resolve_metric(metric, kinds)
    pick = statistics.median if agg == "median" else max
    points = []
    for run in runs:
        try:
            manifest = read_manifest(run_path(run))
        except DamagedRun:
            continue
        started = parse_time(manifest.get("started_at"))
        if started is None:
            continue
        values: dict[str, list[float]] = {}
        for row in read_rows(run_path(run)):
            value = row.get(found.name)
            if row_kind(row) != kind.kind or row.get("passed") is False or not isinstance(value, int | float):
                continue
            if where and not all(config_matches(row, k, v) for k, v in where.items()):
                continue
            values.setdefault(_subject(row, manifest, by), []).append(float(value))
        points += [TrendPoint(s, manifest["run_id"], started, pick(v)) for s, v in values.items()]
    points.sort(key=lambda p: (p.subject, p.time))
    return Trend(kind.kind, found, by, tuple(points), tuple((where or {}).items()))
