"""Performance gates: figures per GPU and per node from the benchmark rows, judged three ways:

1. against the hardware profile: `thresholds[key]` × the datasheet figure (absolute profiles), or
   × the peers' median (relative profiles, for CPUs whose peaks vary);
2. against the site's references (ReFrame style): value × (1 + lower) .. value × (1 + upper);
3. against the peers, by a robust rule: a figure below median − max(k · 1.4826 · MAD,
   min_rel · median) is an outlier, even when it passes 1 and 2 (MAD: median absolute deviation,
   scaled by 1.4826 to estimate a standard deviation; the floor keeps a tight fleet's noise
   from being flagged).
Plus the correctness gate: every checked row must have passed; a failure names its rank(s).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.accept.checks import Check, where
from harness.bench.base import GateFigure, GateValue
from harness.bench.registry import BENCHMARKS
from harness.dtypes import SIZES
from harness.errors import ConfigError, did_you_mean
from harness.hardware import Profile

MAD_SCALE = 1.4826
DECLARED: tuple[GateFigure, ...] = tuple(dict.fromkeys(g for b in BENCHMARKS.values() for g in b.gates))
"""Every gate figure a plug-in declares."""
METRICS = tuple(dict.fromkeys(g.name.format(dtype=d) for g in DECLARED for d in SIZES))
"""Every figure a run can produce: the names site references use."""
THRESHOLD_KEYS = tuple(dict.fromkeys(g.threshold_key.format(dtype=d) for g in DECLARED for d in SIZES))
"""The names of hardware.thresholds (a metric without its unit)."""
_METRIC_CHOICES = ", ".join(dict.fromkeys(g.name.replace("{dtype}", "<dtype>") for g in DECLARED))
_THRESHOLD_CHOICES = ", ".join(dict.fromkeys(g.threshold_key.replace("{dtype}", "<dtype>") for g in DECLARED))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_thresholds(profile: Profile) -> None:
    """hardware.thresholds: known keys, positive fractions (a misspelt key would silently gate nothing)."""
    for key, value in profile.thresholds.items():
        if key not in THRESHOLD_KEYS:
            raise ConfigError(f"hardware={profile.name}: unknown threshold {key!r}{did_you_mean(key, THRESHOLD_KEYS)}; "
                              f"choices: {_THRESHOLD_CHOICES}")  # fmt: skip
        if not _is_number(value) or value <= 0:
            raise ConfigError(f"hardware.thresholds.{key}={value!r} must be a fraction > 0")


def validate_references(references: Any) -> None:
    """site.references[partition][metric] = {value, lower, upper}: known metrics, numbers, lower <= upper."""
    if not isinstance(references, Mapping):
        raise ConfigError("site.references must map partition -> metric -> {value, lower, upper}")
    for part, metrics in references.items():
        if not isinstance(metrics, Mapping):
            raise ConfigError(f"site.references.{part} must map metric -> {{value, lower, upper}}")
        for metric, ref in metrics.items():
            key = f"site.references.{part}.{metric}"
            if metric not in METRICS:
                raise ConfigError(
                    f"{key}: unknown metric{did_you_mean(str(metric), METRICS)}; choices: {_METRIC_CHOICES}"
                )
            if not isinstance(ref, Mapping) or set(ref) - {"value", "lower", "upper"} or "value" not in ref:
                raise ConfigError(f"{key} must be {{value: N, lower: F|null, upper: F|null}}, not {ref!r}")
            if not _is_number(ref["value"]):
                raise ConfigError(f"{key}.value={ref['value']!r} must be a number")
            lower, upper = ref.get("lower"), ref.get("upper")
            for name, bound in (("lower", lower), ("upper", upper)):
                if bound is not None and not _is_number(bound):
                    raise ConfigError(f"{key}.{name}={bound!r} must be a signed fraction (e.g. -0.05) or null")
            if lower is not None and upper is not None and lower > upper:
                raise ConfigError(f"{key}: lower={lower} is above upper={upper}")


@dataclass
class Figure:
    """One measured figure of one subject."""

    metric: str
    """e.g. gemm_bfloat16_tflops, memory_triad_gbps, all_reduce_busbw_gbps, node_pair_busbw_gbps."""
    scope: str
    subject: str
    value: float
    unit: str
    host: str
    rank: int | None = None
    local_index: int | None = None
    uuid: str | None = None
    declared: GateFigure | None = None
    """The plug-in's declaration: threshold key, datasheet base, direction."""
    dtype: str | None = None
    attempts: tuple[float, ...] = ()
    """Every measured value when the subject was re-tested (the last one is `value`)."""


def place(value: GateValue, devices: dict[int, dict], device_type: str) -> Figure:
    """A plug-in's gate value, placed on its GPU (rank), node (host) or the cluster."""
    declared = value.figure
    common = {"metric": value.metric, "value": value.value, "unit": declared.unit, "declared": declared,
              "dtype": value.dtype}  # fmt: skip
    if declared.subject == "gpu":
        return Figure(**common, **where(devices.get(value.rank, {}), value.rank, device_type))  # type: ignore[arg-type]
    if declared.subject == "node":
        host = value.host or devices.get(value.rank, {}).get("host", "?")
        return Figure(**common, scope="node", subject=host, host=host)
    return Figure(**common, scope="cluster", subject="cluster", host="")


def outlier_limits(values: np.ndarray, k: float, min_rel: float) -> tuple[float, float]:
    """(median, the figure below which a peer is an outlier, never below 0); vectorised, O(n)."""
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * MAD_SCALE
    return median, max(0.0, median - max(k * mad, min_rel * abs(median)))


def too_few_peers(figures: list[Figure], min_peers: int) -> list[str]:
    """The metrics with fewer subjects than a peer comparison needs, as 'metric (n < min)'."""
    counts: dict[str, int] = defaultdict(int)
    for f in figures:
        counts[f.metric] += 1
    return [f"{metric} ({n} < {min_peers})" for metric, n in counts.items() if n < min_peers]


def too_few_peers_note(figures: list[Figure], min_peers: int) -> str | None:
    """The report's banner for `too_few_peers`, grouped by count so each count names its own
    metrics: 'not gated by peers (2 < 3): gemm, memory; (1 < 3): all_reduce; ...'. None: all gated."""
    by_count: dict[str, list[str]] = {}
    for item in too_few_peers(figures, min_peers):
        metric, count = item.rsplit(" (", 1)
        by_count.setdefault(count.rstrip(")"), []).append(metric)
    if not by_count:
        return None
    counts = sorted(by_count, key=lambda c: -int(c.split()[0]))
    groups = "; ".join(f"({count}): {', '.join(by_count[count])}" for count in counts)
    return f"not gated by peers {groups}; absolute thresholds, references, health and correctness still judge"


def declaration(metric: str) -> tuple[GateFigure | None, str | None]:
    """The declared gate figure a metric name instantiates, and its dtype ({dtype} templates)."""
    for declared in DECLARED:
        if "{dtype}" not in declared.name:
            if declared.name == metric:
                return declared, None
            continue
        prefix, suffix = declared.name.split("{dtype}")
        dtype = metric[len(prefix) : len(metric) - len(suffix)] if metric.startswith(prefix) else ""
        if metric.endswith(suffix) and dtype in SIZES:
            return declared, dtype
    return None, None


def title_of(metric: str) -> str:
    """A human title for a gate metric's plot (its declaration's), else the metric's name."""
    declared, dtype = declaration(metric)
    return declared.title.format(dtype=dtype) if declared and declared.title else metric.replace("_", " ")


def _base(f: Figure, profile: Profile) -> tuple[str, float | None, str]:
    """(threshold key, datasheet figure in the metric's unit, what it is), from the declaration."""
    declared, dtype = (f.declared, f.dtype) if f.declared else declaration(f.metric)
    if declared is None:
        return f.metric.removesuffix(f"_{f.unit}"), None, "datasheet"
    key = declared.threshold_key.format(dtype=dtype)
    if declared.datasheet == "peak_tflops":
        return key, profile.peak_tflops.get(dtype or ""), f"{dtype} peak"
    if declared.datasheet == "memory_gbps":
        return key, profile.memory_tbps * 1000 if profile.memory_tbps else None, "memory bandwidth"
    if declared.datasheet == "link_gbps_half":
        return key, profile.link_gbps / 2 if profile.link_gbps else None, "link bandwidth / 2"
    return key, None, "datasheet"


def _reference(site: dict[str, Any], partition: str, metric: str) -> dict[str, Any] | None:
    for part in (partition, "*"):
        ref = (site.get(part) or {}).get(metric)
        if ref is not None:
            return ref
    return None


def _threshold(f: Figure, profile: Profile, median: float, peers: int, min_peers: int,
               where: dict[str, Any]) -> Check:  # fmt: skip
    key, base, what = _base(f, profile)
    fraction = profile.thresholds.get(key)
    if fraction is None:
        return Check(f.metric, status="n/a", reason=f"no threshold for {key} in hardware={profile.name}", **where)
    if profile.relative and peers < min_peers:
        return Check(f.metric, status="n/a", reason=f"hardware={profile.name} judges against peers: not gated by "
                     f"peers ({peers} < {min_peers})", **where)  # fmt: skip
    against, label = (median, "the peers' median") if profile.relative else (base, what)
    if against is None:
        return Check(f.metric, status="n/a", reason=f"hardware={profile.name} has no {what}", **where)
    need = fraction * against
    ok = f.value >= need
    reason = f"{f.value:.4g} {'>=' if ok else '<'} {need:.4g} {f.unit} ({fraction:g} x {label} {against:.4g})"
    return Check(f.metric, status="pass" if ok else "fail", reason=reason, threshold=need, **where)


def _against_reference(f: Figure, ref: dict[str, Any], where: dict[str, Any]) -> Check:
    value = float(ref["value"])
    lo = None if ref.get("lower") is None else value * (1 + float(ref["lower"]))
    hi = None if ref.get("upper") is None else value * (1 + float(ref["upper"]))
    ok = (lo is None or f.value >= lo) and (hi is None or f.value <= hi)
    band = f"{'-inf' if lo is None else f'{lo:.4g}'} .. {'+inf' if hi is None else f'{hi:.4g}'}"
    reason = f"{f.value:.4g} {'inside' if ok else 'outside'} [{band}] {f.unit} (site reference {value:g})"
    return Check(f"{f.metric}_reference", status="pass" if ok else "fail", reason=reason, threshold=lo, **where)


def _outlier(f: Figure, median: float, limit: float, where: dict[str, Any]) -> Check:
    if f.value < limit:
        below = (median - f.value) / median if median else 0.0
        reason = f"{f.value:.4g} is {below:.0%} below the peers' median {median:.4g} (outlier limit {limit:.4g})"
        return Check(f"{f.metric}_outlier", status="fail", reason=reason, threshold=limit, **where)
    reason = f"{f.value:.4g} within the peers (median {median:.4g}, limit {limit:.4g})"
    return Check(f"{f.metric}_outlier", status="pass", reason=reason, threshold=limit, **where)


def judge(figures: list[Figure], profile: Profile, *, site: dict[str, Any], partition: str, outlier_mad: float,
          outlier_min_rel: float, min_peers: int = 3) -> list[Check]:  # fmt: skip
    """Threshold, reference and outlier checks for every figure. A peer comparison (outliers,
    relative thresholds) needs `min_peers` subjects: two ranks cannot say which one is slow."""
    checks: list[Check] = []
    by_metric: dict[str, list[Figure]] = defaultdict(list)
    for f in figures:
        by_metric[f.metric].append(f)
    for metric, group in by_metric.items():
        median, limit = outlier_limits(np.array([f.value for f in group], dtype=float), outlier_mad, outlier_min_rel)
        ref = _reference(site, partition, metric)
        for f in group:
            where = {"scope": f.scope, "subject": f.subject, "host": f.host, "rank": f.rank,
                     "local_index": f.local_index, "uuid": f.uuid, "unit": f.unit, "value": f.value,
                     "peers_median": median}  # fmt: skip
            mine = [_threshold(f, profile, median, len(group), min_peers, where)]
            if ref is not None:
                mine.append(_against_reference(f, ref, where))
            if len(group) >= min_peers:
                mine.append(_outlier(f, median, limit, where))
            elif len(group) >= 2:  # one figure has no peers at all: no outlier check to list
                reason = f"not gated by peers ({len(group)} < {min_peers})"
                mine.append(Check(f"{f.metric}_outlier", status="n/a", reason=reason, **where))
            if len(f.attempts) > 1:  # a re-tested subject: say what each attempt measured
                tried = ", then ".join(f"{v:.4g}" for v in f.attempts)
                for check in mine:
                    check.reason += f" (re-tested: {tried} {f.unit})"
            checks.extend(mine)
    return checks


def correctness(rows: dict[str, list[dict]], devices: dict[int, dict], device_type: str) -> list[Check]:
    """One check per benchmark and subject: every row checked against its expected data."""
    checks: list[Check] = []
    for bench, bench_rows in rows.items():
        bad: dict[int, int] = defaultdict(int)
        total = 0
        for r in bench_rows:
            total += 1
            if not r.get("passed", True):
                ranks = r.get("wrong_ranks") or ([r["rank"]] if "rank" in r else [])
                for rank in ranks:
                    bad[rank] += 1
        if not bad:
            checks.append(Check(f"correctness_{bench}", "cluster", "cluster", "pass", f"{total} rows checked, 0 wrong"))
            continue
        for rank, count in sorted(bad.items()):
            reason = f"rank {rank}: {count} of {total} results wrong"
            place = where(devices.get(rank, {}), rank, device_type)
            checks.append(Check(f"correctness_{bench}", status="fail", reason=reason, value=count, **place))
    return checks
