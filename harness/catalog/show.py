"""`harness results list`, `show` and sweep summaries: runs as text.

The functions return data and strings; the CLI prints them (with rich if it likes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.catalog.filters import RunFilter, select
from harness.catalog.text import table
from harness.results.kinds import RowKind, row_kind
from harness.results.read import DamagedRun, RunRef, RunSummary, iter_runs, read_manifest, read_rows, read_run, run_path

_NOT_COLUMNS = ("run_id", "kind", "bench")


def _hosts(hosts: Sequence[str], most: int = 3) -> str:
    return ",".join(hosts[:most]) + (f" +{len(hosts) - most}" if len(hosts) > most else "") if hosts else "-"


def list_table(runs: Sequence[RunSummary]) -> str:
    """One line per run: id, task, start, status, world size, hosts, devices, headline (or the damage)."""
    lines = []
    for r in runs:
        started = r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else "-"
        figure = f"DAMAGED: {r.damage}" if r.damage else str(r.headline or "-")
        lines.append([r.id, r.task, started, r.status, r.world_size, _hosts(r.hosts), _hosts(r.devices, 2), figure])
    return table(["run", "task", "started (UTC)", "status", "world", "hosts", "devices", "headline"], lines)


def list_runs(
    results_dir: str | os.PathLike, run_filter: RunFilter | None = None, *, kinds: Mapping[str, RowKind] | None = None
) -> list[RunSummary]:
    """The runs of `results_dir` that pass `run_filter`, oldest first, damaged ones included."""
    return list(select(iter_runs(results_dir, kinds=kinds), run_filter))


def sweep_runs(
    results_dir: str | os.PathLike, sweep_id: str, *, kinds: Mapping[str, RowKind] | None = None
) -> list[RunSummary]:
    """The runs of one sweep (manifest `sweep_id`), oldest first."""
    return list_runs(results_dir, RunFilter(sweep=sweep_id), kinds=kinds)


def sweep_table(sweep_id: str, runs: Sequence[RunSummary]) -> str:
    """A sweep's summary: a count per status, then one line per element with status and headline."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    head = f"sweep {sweep_id}: {len(runs)} runs" + "".join(f", {n} {s}" for s, n in sorted(counts.items()))
    lines = [[i, r.id, r.status, f"DAMAGED: {r.damage}" if r.damage else str(r.headline or "-")]
             for i, r in enumerate(runs)]  # fmt: skip
    return head + "\n" + table(["#", "run", "status", "headline"], lines)


@dataclass(frozen=True)
class RunDetail:
    """What `show` prints about one run."""

    summary: RunSummary
    facts: tuple[tuple[str, str], ...]
    """(label, value) lines from the manifest."""
    tables: tuple[tuple[str, str], ...]
    """(kind, table text) per row kind, in row order."""
    plots: tuple[str, ...]
    """The run's plot files (names in the run directory)."""

    def text(self) -> str:
        width = max((len(k) for k, _ in self.facts), default=0)
        out = [f"{k.ljust(width)}  {v}" for k, v in self.facts]
        for kind, text in self.tables:
            out += ["", f"{kind}:", text]
        if self.plots:
            out += ["", "plots: " + ", ".join(str(self.summary.path / p) for p in self.plots)]
        return "\n".join(out)


def _facts(summary: RunSummary, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), Mapping) else {}
    extra = (("reason", summary.reason), ("exit code", summary.exit_code))
    status = summary.status + "".join(f", {k} {v}" for k, v in extra if v is not None)
    dirty = " (uncommitted changes)" if manifest.get("git_dirty") else ""
    facts = [
        ("run", summary.id), ("path", str(summary.path)), ("task", summary.task), ("status", status),
        ("started", str(summary.started_at or "-")), ("finished", str(summary.finished_at or "-")),
        ("world size", str(summary.world_size or "-")), ("hosts", ", ".join(summary.hosts) or "-"),
        ("devices", ", ".join(summary.devices) or "-"), ("launcher", str(manifest.get("launcher", "-"))),
        ("git", f"{summary.git_sha or '-'}{dirty}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) or "-"),
        ("schema", str(summary.schema_version or "-")), ("rows", str(summary.rows)),
        ("headline", str(summary.headline or "-")),
    ]  # fmt: skip
    if summary.sweep_id:
        facts.append(("sweep", summary.sweep_id))
    for label, value in (("damage", summary.damage), ("error", manifest.get("error"))):
        if value:
            facts.append((label, str(value)))
    for note in manifest.get("notes") or []:
        facts.append(("note", str(note)))
    if manifest.get("summary"):
        facts.append(("summary", json.dumps(manifest["summary"])[:400]))
    return facts


def _columns(rows: Sequence[Mapping[str, Any]], kind: RowKind | None) -> list[str]:
    if kind is not None:
        return [*kind.identity, *(m.name for m in kind.metrics), "passed"]
    return list(dict.fromkeys(k for r in rows for k in r if k not in _NOT_COLUMNS))


def show(run: RunRef, kinds: Mapping[str, RowKind] | None = None) -> RunDetail:
    """The manifest summary, one table per row kind (a declared kind shows its identity and
    metrics, another every field) and the plot files of one run. A damaged run shows what can be read."""
    path = run_path(run)
    summary = read_run(path, kinds=kinds)
    try:
        manifest: Mapping[str, Any] = read_manifest(path)
    except DamagedRun:
        manifest = {}
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for row in read_rows(path):
        by_kind.setdefault(row_kind(row) or "?", []).append(row)
    tables = []
    for name, rows in by_kind.items():
        columns = _columns(rows, (kinds or {}).get(name))
        tables.append((name, table(columns, [[r.get(c) for c in columns] for r in rows])))
    plots = tuple(f for f in summary.files if f.lower().endswith((".png", ".svg", ".pdf", ".html")))
    return RunDetail(summary, tuple(_facts(summary, manifest)), tuple(tables), plots)
