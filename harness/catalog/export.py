"""`harness results export`: rows as CSV, headline figures as Prometheus text, training runs as MLPerf log lines.

- csv: every row of the runs; the header is run_id, kind, then the union of the other row fields
  in the order they first appear (`bench`, the v1/v2 name of `kind`, becomes `kind`).
- prometheus: the text exposition format that node_exporter's textfile collector reads (no
  timestamps, one HELP and TYPE per family, families contiguous): per run, per declared kind, the
  best value of the kind's headline metric per host, device and dtype (per GPU where rows carry a
  rank), named `harness_<kind>_<metric>`, plus `harness_run_start_time_seconds`.
- mllog: `:::MLLOG {...}` lines (REFERENCE §7) for training runs: run_start / run_stop bracket the
  run, and per logged step `train_loss` and `tracked_stats` (throughput). The rows carry no clock,
  so a step's time_ms is placed by adding up the logged step times from run_start (an estimate,
  marked `"time_estimated": true` in its metadata).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from harness.errors import ConfigError
from harness.results.kinds import RowKind, row_kind
from harness.results.read import DamagedRun, RunRef, parse_time, read_manifest, read_rows, run_path

FORMATS = ("csv", "prometheus", "mllog")


def export(runs: Sequence[RunRef], format: Literal["csv", "prometheus", "mllog"], kinds: Mapping[str, RowKind]) -> str:
    """The runs in `format` as text (for standard output). Raises ConfigError for an unknown format
    or a run directory without a readable manifest."""
    if format not in FORMATS:
        raise ConfigError(f"results.format={format!r}: use one of {', '.join(FORMATS)}")
    loaded = [(_manifest(r), read_rows(run_path(r))) for r in runs]
    if format == "csv":
        return to_csv(loaded)
    if format == "prometheus":
        return to_prometheus(loaded, kinds)
    return "".join(to_mllog(m, rows) for m, rows in loaded)


def _manifest(run: RunRef) -> dict[str, Any]:
    try:
        return read_manifest(run_path(run))
    except DamagedRun as err:
        raise ConfigError(f"{run_path(run)}: {err}") from None


Loaded = Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]


def to_csv(loaded: Loaded) -> str:
    """Rows of every run as CSV; lists and objects as JSON, null as an empty cell, booleans true/false."""
    header = ["run_id", "kind"]
    seen = set(header) | {"bench"}
    for _, rows in loaded:
        for row in rows:
            for key in row:
                if key not in seen:
                    seen.add(key)
                    header.append(key)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for manifest, rows in loaded:
        for row in rows:
            values = {**row, "run_id": row.get("run_id", manifest["run_id"]), "kind": row_kind(row)}
            writer.writerow([_csv_cell(values.get(k)) for k in header])
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(*parts: str) -> str:
    """A valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) from parts joined by '_'."""
    name = _NAME_BAD.sub("_", "_".join(parts))
    return name if re.match(r"[a-zA-Z_:]", name) else "_" + name


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _devices_by_rank(manifest: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    found = {}
    for device in manifest.get("devices") or []:
        if isinstance(device, Mapping) and isinstance(device.get("rank"), int):
            found[device["rank"]] = device
    return found


def _labels(manifest: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, str]:
    """host, device (name), gpu (uuid or host:rank) where the row names a rank, dtype where it has one."""
    devices = _devices_by_rank(manifest)
    rank = row.get("rank")
    device = devices.get(rank) if isinstance(rank, int) else None
    first = next(iter(devices.values()), {})
    hosts = manifest.get("hosts") or ["unknown"]
    host = row.get("host") or (device or {}).get("host") or (hosts[0] if len(hosts) == 1 else "all")
    labels = {"run_id": str(manifest["run_id"]), "task": str(manifest["task"]), "host": str(host),
              "device": str((device or first).get("name", "unknown"))}  # fmt: skip
    if isinstance(rank, int):
        labels["gpu"] = str(row.get("uuid") or (device or {}).get("uuid") or f"{host}:{rank}")
    if isinstance(row.get("dtype"), str):
        labels["dtype"] = row["dtype"]
    return labels


def to_prometheus(loaded: Loaded, kinds: Mapping[str, RowKind]) -> str:
    """Headline figures in the Prometheus text format (node_exporter textfile collector)."""
    families: dict[str, tuple[str, dict[tuple, float]]] = {}
    starts = {}
    for manifest, rows in loaded:
        started = parse_time(manifest.get("started_at"))
        if started:
            starts[(("run_id", str(manifest["run_id"])), ("task", str(manifest["task"])))] = started.timestamp()
        for row in rows:
            kind = kinds.get(row_kind(row) or "")
            if kind is None or row.get("passed") is False or not kind.metrics:
                continue
            metric = kind.metric(kind.headline) if kind.headline else kind.metrics[0]
            value = row.get(metric.name) if metric else None
            if metric is None or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            name = metric_name("harness", kind.kind, metric.name)
            better = "higher" if metric.higher_is_better else "lower"
            help_text = f"best {kind.kind} {metric.name} of the run ({metric.unit}, {better} is better)"
            samples = families.setdefault(name, (help_text, {}))[1]
            key = tuple(sorted(_labels(manifest, row).items()))
            old = samples.get(key)
            if old is None or (value > old if metric.higher_is_better else value < old):
                samples[key] = float(value)
    lines = []
    for name, (help_text, samples) in sorted(families.items()):
        lines += _family(name, help_text, samples)
    if starts:
        lines += _family("harness_run_start_time_seconds", "start of the run, seconds since the Unix epoch", starts)
    return "".join(line + "\n" for line in lines)


def _family(name: str, help_text: str, samples: Mapping[tuple, float]) -> list[str]:
    out = [f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}", f"# TYPE {name} gauge"]
    for labels, value in sorted(samples.items()):
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
        out.append(f"{name}{{{text}}} {float(value)!r}")
    return out


def _mllog(time_ms: float, event_type: str, key: str, value: Any, metadata: Mapping[str, Any]) -> str:
    record = {"namespace": "", "time_ms": round(time_ms), "event_type": event_type, "key": key, "value": value,
              "metadata": dict(metadata)}  # fmt: skip
    return ":::MLLOG " + json.dumps(record, default=str) + "\n"


def _ms(when: datetime | None) -> float | None:
    return when.timestamp() * 1000 if when else None


def to_mllog(manifest: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> str:
    """MLPerf-style log lines of one training run; '' for a run with no training rows."""
    steps = [r for r in rows if row_kind(r) == "train" and isinstance(r.get("step"), int)]
    summary = next((r for r in rows if row_kind(r) == "train_summary"), None)
    if not steps and summary is None:
        return ""
    start = _ms(parse_time(manifest.get("started_at"))) or 0.0
    base = {"run_id": manifest["run_id"]}
    config = manifest.get("config") if isinstance(manifest.get("config"), Mapping) else {}
    train = config.get("train") if isinstance(config.get("train"), Mapping) else {}
    facts = manifest.get("train") if isinstance(manifest.get("train"), Mapping) else {}
    seq_len = train.get("seq_len")
    per_step = facts.get("tokens_per_step")
    batch = per_step // seq_len if isinstance(per_step, int) and isinstance(seq_len, int) and seq_len else None
    out = [_mllog(start, "POINT_IN_TIME", "submission_benchmark", manifest.get("task"), base)]
    for key, value in (("seed", train.get("seed", facts.get("seed"))), ("global_batch_size", batch),
                       ("max_sequence_length", seq_len)):  # fmt: skip
        if value is not None:
            out.append(_mllog(start, "POINT_IN_TIME", key, value, base))
    out.append(_mllog(start, "INTERVAL_START", "run_start", None, base))
    resumed = facts.get("resumed_from_step")
    clock, previous = start, resumed if isinstance(resumed, int) else 0
    for row in sorted(steps, key=lambda r: r["step"]):
        step_s = row.get("step_time_s") if isinstance(row.get("step_time_s"), int | float) else 0.0
        clock += step_s * 1000 * (row["step"] - previous)  # logged every few steps: their time is like this one's
        previous = row["step"]
        meta = {**base, "step": row["step"], "time_estimated": True}
        if batch:
            meta["samples_count"] = batch * row["step"]
        out.append(_mllog(clock, "POINT_IN_TIME", "train_loss", row.get("loss"), meta))
        out.append(_mllog(clock, "POINT_IN_TIME", "tracked_stats", {"throughput": row.get("tokens_per_s"),
                          "tokens_per_s": row.get("tokens_per_s"), "lr": row.get("lr")}, meta))  # fmt: skip
    stop = _ms(parse_time(manifest.get("finished_at"))) or clock
    if batch and steps:
        out.append(_mllog(stop, "POINT_IN_TIME", "train_samples", batch * steps[-1]["step"], base))
    if summary is not None:
        out.append(_mllog(stop, "POINT_IN_TIME", "tokens_per_s", summary.get("tokens_per_s"),
                          {**base, "steps_measured": summary.get("steps_measured")}))  # fmt: skip
    status = "success" if manifest.get("status") == "ok" else "aborted"
    out.append(_mllog(stop, "INTERVAL_END", "run_stop", None, {**base, "status": status}))
    return "".join(out)
