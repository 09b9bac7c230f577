"""`harness results compare`: rows of several runs matched by their kind's identity, a ratio per
metric against the first run, judged against the noise the runs themselves show.

Noise of a row is (median − min) / median of its time (`time_us`, `time_us_min`): a figure that
moved less than the larger noise of the two rows (at least NOISE_FLOOR) is `same`. Rows that failed
their correctness check are left out: no speed counts without a passing check.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.catalog.plots import Panel, Series, render_png
from harness.catalog.text import subject_text, table
from harness.errors import ConfigError
from harness.results.kinds import Metric, RowKind, row_kind
from harness.results.read import DamagedRun, RunRef, RunSummary, read_manifest, read_rows, run_path

NOISE_FLOOR = 0.02
"""The smallest change compare calls better or worse."""

Subject = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one identity across the runs (values[0] is the reference run's)."""

    kind: str
    subject: Subject
    """The identity: (field, value) in the kind's order."""
    metric: str
    unit: str
    higher_is_better: bool
    values: tuple[float | None, ...]
    """Per run, the median over its rows of this identity; None where the run lacks it."""
    noise: tuple[float | None, ...]
    """Per run, the largest (median − min) / median of those rows; None without timing spread."""

    @property
    def subject_text(self) -> str:
        return subject_text(self.subject)

    def ratio(self, i: int) -> float | None:
        """values[i] / values[0]; None when either is missing or the reference is zero."""
        ref, value = self.values[0], self.values[i]
        return value / ref if ref and value is not None else None

    def worse_by(self, i: int) -> float | None:
        """How much worse run i is than the reference, as a fraction (negative: better)."""
        r = self.ratio(i)
        if r is None:
            return None
        return 1.0 - r if self.higher_is_better else r - 1.0

    def threshold(self, i: int, floor: float = NOISE_FLOOR) -> float:
        """The larger noise of the reference and run i, at least `floor`."""
        return max(self.noise[0] or 0.0, self.noise[i] or 0.0, floor)

    def verdict(self, i: int, *, floor: float = NOISE_FLOOR, tolerance: float | None = None) -> str:
        """'better', 'worse' or 'same' (within the threshold, or `tolerance` when given); 'n/a' unmatched."""
        worse = self.worse_by(i)
        if worse is None:
            return "n/a"
        limit = self.threshold(i, floor) if tolerance is None else tolerance
        return "worse" if worse > limit else "better" if worse < -limit else "same"


@dataclass(frozen=True)
class Comparison:
    """The matched metrics of several runs against the first."""

    run_ids: tuple[str, ...]
    metrics: tuple[MetricComparison, ...]
    """One per (identity of the first run, metric of its kind), in the first run's row order."""
    matched: tuple[int, ...]
    """Per run, how many of the first run's identities it shares (matched[0]: all of them)."""
    plotted: tuple[tuple[str, str], ...] = ()
    """(kind, metric) the plot shows: each kind's headline metric (busbw for collectives, TFLOP/s for gemm)."""

    def table(self) -> str:
        """One line per metric and identity: the values, and per later run its ratio and verdict."""
        headers = ["kind", "subject", "metric", "unit", _short(self.run_ids[0])]
        for run_id in self.run_ids[1:]:
            headers += [_short(run_id), "ratio", "verdict"]
        lines = []
        for m in self.metrics:
            line: list[Any] = [m.kind, m.subject_text, m.metric, m.unit, m.values[0]]
            for i in range(1, len(self.run_ids)):
                r = m.ratio(i)
                verdict = m.verdict(i)
                note = f"{verdict} (±{m.threshold(i):.1%})" if verdict in ("same", "better", "worse") else verdict
                line += [m.values[i], None if r is None else round(r, 3), note]
            lines.append(line)
        return table(headers, lines)

    def rows(self) -> list[dict[str, Any]]:
        """One row per metric, identity and later run: the values, ratio and verdict (a run
        directory keeps them as rows of kind `comparison`)."""
        out = []
        for m in self.metrics:
            for i in range(1, len(self.run_ids)):
                out.append({"compared_kind": m.kind, "subject": m.subject_text, "metric": m.metric, "unit": m.unit,
                            "reference_run": self.run_ids[0], "run": self.run_ids[i], "reference": m.values[0],
                            "value": m.values[i], "ratio": m.ratio(i), "threshold": m.threshold(i),
                            "verdict": m.verdict(i)})  # fmt: skip
        return out

    def summary(self) -> dict[str, Any]:
        """Counts of better, worse and same per later run."""
        out: dict[str, Any] = {"reference": self.run_ids[0]}
        for i, run_id in enumerate(self.run_ids[1:], start=1):
            verdicts = [m.verdict(i) for m in self.metrics]
            out[run_id] = {v: verdicts.count(v) for v in ("better", "same", "worse", "n/a")}
        return out

    def plot(self) -> bytes:
        """The matched curves on one figure, one panel per kind: a figure against message size for
        kinds with a `bytes` identity (busbw for collectives), else bars per shape (TFLOP/s for gemm)."""
        panels = [_panel(self, kind, metric) for kind, metric in self.plotted]
        return render_png([p for p in panels if p.series], title="compare: " + " vs ".join(map(_short, self.run_ids)))


_PER_SUBJECT = ("rank", "local_rank", "host", "uuid")
"""Identity fields a bar chart folds together (median): TFLOP/s per shape, not per GPU."""


def _panel(comparison: Comparison, kind: str, metric: str) -> Panel:
    chosen = [m for m in comparison.metrics if m.kind == kind and m.metric == metric]
    unit = chosen[0].unit if chosen else ""
    fields = [f for f, _ in chosen[0].subject] if chosen else []
    if "bytes" in fields:
        return _size_panel(comparison, chosen, kind, metric, unit)
    return _bar_panel(comparison, chosen, kind, metric, unit)


def _varying(subjects: Sequence[Subject], drop: Sequence[str]) -> list[str]:
    """Fields whose value differs between subjects (the rest would only lengthen labels)."""
    fields = [f for f, _ in subjects[0] if f not in drop] if subjects else []
    return [f for f in fields if len({dict(s).get(f) for s in subjects}) > 1]


def _label(subject: Subject, fields: Sequence[str]) -> str:
    values = dict(subject)
    if {"m", "n", "k"} & set(fields) and {"m", "n", "k"} <= set(values):  # a gemm shape reads as MxNxK
        rest = [f for f in fields if f not in ("m", "n", "k")]
        shape = f"{values['m']}x{values['n']}x{values['k']}"
        return " ".join([subject_text([(f, values[f]) for f in rest]), shape]).strip()
    return subject_text([(f, values[f]) for f in fields])


def _size_panel(comparison: Comparison, chosen: list[MetricComparison], kind: str, metric: str, unit: str) -> Panel:
    curves = _varying([m.subject for m in chosen], ("bytes",))
    labels = list(dict.fromkeys(_label(m.subject, curves) for m in chosen))
    series = []
    for i, run_id in enumerate(comparison.run_ids):  # a colour per curve, a line style per run
        by_curve: dict[str, list[tuple[int, float]]] = {}
        for m in chosen:
            if m.values[i] is not None:
                by_curve.setdefault(_label(m.subject, curves), []).append((dict(m.subject)["bytes"], m.values[i]))
        for label, points in by_curve.items():
            points.sort()
            name = f"{_short(run_id)} {label}".strip()
            xs, ys = tuple(x for x, _ in points), tuple(y for _, y in points)
            series.append(Series(name, xs, ys, color=labels.index(label), dashes=i))
    return Panel(f"{kind}: {metric} against message size", f"{metric} ({unit})", tuple(series), "size",
                 xlabel="message size (bytes, binary multiples)")  # fmt: skip


def _bar_panel(comparison: Comparison, chosen: list[MetricComparison], kind: str, metric: str, unit: str) -> Panel:
    fields = _varying([m.subject for m in chosen], _PER_SUBJECT) or [
        f for f, _ in (chosen[0].subject if chosen else ()) if f not in _PER_SUBJECT
    ]
    categories = list(dict.fromkeys(_label(m.subject, fields) for m in chosen))
    series = []
    for i, run_id in enumerate(comparison.run_ids):
        values: dict[str, list[float]] = {}
        for m in chosen:
            if m.values[i] is not None:
                values.setdefault(_label(m.subject, fields), []).append(m.values[i])
        xs = tuple(categories.index(c) for c in values)
        series.append(Series(_short(run_id), xs, tuple(statistics.median(v) for v in values.values())))
    return Panel(f"{kind}: {metric} per {', '.join(fields) or 'case'}", f"{metric} ({unit})", tuple(series), "bars",
                 categories=tuple(categories))  # fmt: skip


def _short(run_id: str) -> str:
    """'20261128T031045Z-bench-7f1604' -> '1128T0310-7f1604': enough to tell runs apart in a header."""
    parts = run_id.split("-")
    return f"{parts[0][4:13]}-{parts[-1]}" if len(parts) >= 3 and len(parts[0]) == 16 else run_id


def _hashable(value: Any) -> Any:
    """Identity values as dict keys: lists become tuples, objects sorted (key, value) tuples."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _noise(row: Mapping[str, Any]) -> float | None:
    median, low = row.get("time_us"), row.get("time_us_min")
    if isinstance(median, int | float) and isinstance(low, int | float) and median > 0:
        return max(0.0, (median - low) / median)
    return None


def group_rows(rows: Sequence[Mapping[str, Any]], kinds: Mapping[str, RowKind]) -> dict[tuple[str, Subject], list]:
    """Passing rows of declared kinds grouped by (kind, identity), in row order."""
    groups: dict[tuple[str, Subject], list] = {}
    for row in rows:
        kind = kinds.get(row_kind(row) or "")
        if kind is None or row.get("passed") is False:
            continue
        subject = tuple((f, _hashable(row.get(f))) for f in kind.identity)
        groups.setdefault((kind.kind, subject), []).append(row)
    return groups


def _value(rows: list[Mapping[str, Any]], metric: Metric) -> float | None:
    values = [r[metric.name] for r in rows if isinstance(r.get(metric.name), int | float)]
    return statistics.median(values) if values else None


def _run_id(run: RunRef) -> str:
    if isinstance(run, RunSummary):
        return run.id
    try:
        return read_manifest(run_path(run))["run_id"]
    except DamagedRun:
        return run_path(run).name


def compare(runs: Sequence[RunRef], kinds: Mapping[str, RowKind]) -> Comparison:
    """Match the rows of `runs` by identity and compare every declared metric with the first run.

    Raises ConfigError (one line) for fewer than two runs, a path that is not a run directory, or
    a run that shares no identity with the first.
    """
    if len(runs) < 2:
        raise ConfigError(f"compare needs at least two runs, got {len(runs)}")
    for run in runs:
        if not run_path(run).is_dir():
            raise ConfigError(f"{run_path(run)} is not a run directory")
    ids = tuple(_run_id(r) for r in runs)
    grouped = [group_rows(read_rows(run_path(r)), kinds) for r in runs]
    reference = grouped[0]
    matched = tuple(sum(1 for key in reference if key in g) for g in grouped)
    for i, count in enumerate(matched[1:], 1):
        if count == 0:
            first, other = _kinds_text(reference), _kinds_text(grouped[i])
            raise ConfigError(f"runs share no row identity: {ids[0]} has {first}; {ids[i]} has {other}")
    metrics = []
    for kind_name, subject in reference:
        if not any((kind_name, subject) in g for g in grouped[1:]):
            continue
        kind = kinds[kind_name]
        per_run = [g.get((kind_name, subject), []) for g in grouped]
        noise = tuple(max((n for r in rows if (n := _noise(r)) is not None), default=None) for rows in per_run)
        for metric in kind.metrics:
            values = tuple(_value(rows, metric) for rows in per_run)
            if values[0] is None:
                continue
            metrics.append(MetricComparison(kind_name, subject, metric.name, metric.unit, metric.higher_is_better,
                                            values, noise))  # fmt: skip
    plotted = []
    for kind_name in dict.fromkeys(m.kind for m in metrics):
        kind = kinds[kind_name]
        name = kind.headline or kind.metrics[0].name
        plotted.append((kind_name, name))
    return Comparison(ids, tuple(metrics), matched, tuple(plotted))


def _kinds_text(groups: Mapping[tuple[str, Subject], list]) -> str:
    counts: dict[str, int] = {}
    for kind, _ in groups:
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no rows of a declared kind"
