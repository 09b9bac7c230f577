"""Reading runs back: tolerant reads of manifests and rows, one summary per run directory, and the
index that lets a results dir of 10,000 runs list in a fraction of a second.

The run directories are the truth. The index (`<results dir>/.index.json`) only caches what a scan
of each run found, keyed by the stat of its directory, manifest and rows: a run whose key changed is
read again, a run that is gone is dropped, and an index that cannot be read or written is ignored.
A damaged run (unreadable or partial manifest, truncated or unparsable rows, listed files missing)
is listed with the reason and never stops a listing.

Reads accept schema v1, v2 and v3: the row kind is `kind` (v3) or `bench` (v1, v2), and the v3
manifest fields `exit_code`, `reason`, `sweep_id` and `heartbeat_at` are optional.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any

from harness.results.atomic import write_atomic
from harness.results.kinds import RowKind, row_kind

MANIFEST = "manifest.json"
ROWS = "rows.jsonl"
INDEX = ".index.json"
SUBMISSION = "submission.json"  # written by `harness slurm submit` before the job starts
HEARTBEAT_TIMEOUT_S = 60.0
"""A `running` manifest whose heartbeat is older than this is listed as `abandoned`."""
_INDEX_VERSION = 1
_RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-([a-z_]+)-[0-9a-f]{6}$")
_REQUIRED = ("run_id", "task", "status", "started_at")


class DamagedRun(ValueError):
    """A run directory that cannot be read as a run; the message is the reason, in one line."""


@dataclass(frozen=True)
class Headline:
    """The figure a listing shows for a run: the best value of one metric over its rows."""

    name: str
    """`<kind>.<metric>` (from the rows) or the manifest summary's key path."""
    value: float | str
    unit: str = ""

    def __str__(self) -> str:
        value = f"{self.value:.4g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.name} {value}{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class RunSummary:
    """What a listing knows about one run directory, from its manifest and a scan of its rows."""

    id: str
    path: Path
    task: str
    status: str
    """running, ok, failed, interrupted, `abandoned` (running with a stale heartbeat), `pending`
    (submitted, no manifest yet) or `unknown` (no readable manifest)."""
    started_at: datetime | None
    finished_at: datetime | None = None
    world_size: int | None = None
    hosts: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    """Distinct device names, in rank order."""
    sweep_id: str | None = None
    headline: Headline | None = None
    damage: str | None = None
    """Why the run is damaged, in one line; None for a sound run."""
    schema_version: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    git_sha: str | None = None
    rows: int = 0
    """Rows read from rows.jsonl."""
    files: tuple[str, ...] = ()
    """Further files the manifest lists (plots)."""
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The manifest's config, flattened to dotted keys."""
    row_stats: Mapping[str, Mapping[str, Sequence[float]]] = field(default_factory=dict, compare=False, repr=False)
    """Per row kind, per field with a fractional number (a measured figure, as writers write floats):
    [min, max] over the rows, to 6 significant digits."""
    row_types: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Each row field's JSON type: b bool, i integer, f number, s string, j list or object, n only ever
    null, m mixed."""

    @property
    def damaged(self) -> bool:
        return self.damage is not None


RunRef = str | os.PathLike | RunSummary


def run_path(run: RunRef) -> Path:
    """The directory of a run given as a path or a summary."""
    return run.path if isinstance(run, RunSummary) else Path(run)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a run directory (or a manifest file), any schema version.

    Raises DamagedRun when it is missing, unreadable, not a JSON object or lacks run_id, task,
    status or started_at. Unknown fields are kept; nothing is validated beyond that.
    """
    path = Path(path)
    file = path if path.name == MANIFEST or path.is_file() else path / MANIFEST
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DamagedRun(f"no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedRun(f"{MANIFEST} unreadable: {err.__class__.__name__}: {err}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise DamagedRun(f"{MANIFEST} is not JSON (partial write?): {err.msg} at line {err.lineno}") from None
    if not isinstance(manifest, dict):
        raise DamagedRun(f"{MANIFEST} is not a JSON object")
    lacking = [key for key in _REQUIRED if not isinstance(manifest.get(key), str)]
    if lacking:
        raise DamagedRun(f"partial {MANIFEST}: lacks {', '.join(lacking)}")
    return manifest


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run directory (or a rows.jsonl file) that parse as rows; damaged lines are
    skipped (`iter_runs` reports them). A missing file has no rows."""
    path = Path(path)
    rows, _ = _scan_rows(path if path.name == ROWS or path.is_file() else path / ROWS)
    return rows


def _scan_rows(file: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of rows.jsonl and what is wrong with the file (None: nothing)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], None
    except (OSError, UnicodeDecodeError) as err:
        return [], f"{ROWS} unreadable: {err.__class__.__name__}: {err}"
    lines = text.split("\n")
    truncated = bool(lines[-1].strip())  # every row the writer writes ends with a newline
    body = [line for line in lines if line.strip()]
    try:  # one parse for the whole file: much faster than a parse per line
        rows = json.loads("[" + ",".join(body) + "]")
        if all(isinstance(row, dict) and row_kind(row) is not None for row in rows):
            return rows, None
    except json.JSONDecodeError:
        pass
    rows, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if isinstance(row, dict) and row_kind(row) is not None:
            rows.append(row)
        else:
            bad.append(number)
    if not bad:
        return rows, None
    if truncated and bad == [len(lines)]:
        return rows, f"{ROWS}: {TRUNCATED} (line {bad[0]})"
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return rows, f"{ROWS}: line {bad[0]}{more} not a row (not JSON or no kind)"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'bench': {'iters': 5}} -> {'bench.iters': 5}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time as an aware datetime (naive ones are UTC); None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _row_facts(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, list[float]]], dict[str, str]]:
    """Per kind and measured figure (a float field) the [min, max]; and each field's JSON type code
    (see RunSummary.row_types).

    Column by column rather than row by row: rows with the same fields are transposed with zip and
    each column is typed and bounded by builtins, so a million rows take about a second, not five.
    """
    stats: dict[str, dict[str, list[float]]] = {}
    types: dict[str, str] = {}
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(row), []).append(row)
    for keys, group in shapes.items():
        columns = (
            dict(zip(keys, zip(*map(itemgetter(*keys), group), strict=True), strict=True))
            if len(keys) > 1
            else {keys[0]: tuple(r[keys[0]] for r in group)}
        )
        kinds = columns.get("kind") or columns.get("bench") or ("",) * len(group)
        if len(set(kinds)) == 1:
            _column_facts(columns, stats.setdefault(str(kinds[0] or ""), {}), types)
            continue
        for kind in set(kinds):  # rows of several kinds with the same fields: split them
            pick = [i for i, k in enumerate(kinds) if k == kind]
            part = {key: tuple(column[i] for i in pick) for key, column in columns.items()}
            _column_facts(part, stats.setdefault(str(kind or ""), {}), types)
    return {k: {f: [_round(lo), _round(hi)] for f, (lo, hi) in s.items()} for k, s in stats.items()}, types


def _column_facts(
    columns: Mapping[str, Sequence[Any]], kind_stats: dict[str, list[float]], types: dict[str, str]
) -> None:
    for key, column in columns.items():
        classes = set(map(type, column))
        for cls in classes:
            code, seen = _TYPE_CODES.get(cls, "j"), types.get(key)
            types[key] = code if seen in (None, code) else _merge_codes(seen, code)
        if float not in classes:  # measured figures are floats; integers are counts and sizes (identities)
            continue
        floats = column if len(classes) == 1 else [v for v in column if type(v) is float]
        lo, hi = min(floats), max(floats)
        span = kind_stats.get(key)
        kind_stats[key] = [lo, hi] if span is None else [min(lo, span[0]), max(hi, span[1])]


_TYPE_CODES = {bool: "b", int: "i", float: "f", str: "s", type(None): "n"}


def _summary_headline(summary: Any) -> list[Any] | None:
    """The first scalar of the manifest's free-form `summary` (the task's own headline), as [name, value]."""
    if not isinstance(summary, Mapping):
        return None
    for key, value in summary.items():
        if isinstance(value, Mapping):
            inner = _summary_headline(value)
            if inner:
                return [f"{key}.{inner[0]}", inner[1]]
        elif isinstance(value, int | float | str) and not isinstance(value, bool):
            return [str(key), value]
    return None


def _scan(path: Path) -> dict[str, Any]:
    """Read one run directory into an index entry (JSON-able): manifest facts, row facts, damage."""
    name = path.name
    stamp = _RUN_ID.match(name)
    entry: dict[str, Any] = {"id": name, "task": stamp.group(2) if stamp else "?", "status": "unknown",
                             "started_at": _stamp_time(stamp.group(1)) if stamp else None, "types": {}}  # fmt: skip
    try:
        manifest = read_manifest(path)
    except DamagedRun as err:
        if str(err) == f"no {MANIFEST}" and (path / SUBMISSION).exists():
            return {**entry, "status": "pending"}
        return {**entry, "damage": str(err)}
    entry.update(_manifest_facts(manifest))
    rows_file = path / ROWS
    rows, damage = _scan_rows(rows_file)
    entry["rows"] = len(rows)
    entry["stats"], entry["types"] = _row_facts(rows)
    declared = manifest.get("rows")
    if damage is None and entry["status"] != "running" and isinstance(declared, int) and declared != len(rows):
        damage = (f"no {ROWS} (manifest says {declared} rows)" if not rows_file.exists()
                  else f"{ROWS} has {len(rows)} rows, manifest says {declared}")  # fmt: skip
    missing = [f for f in entry["files"] if not (path / f).is_file()]
    if damage is None and missing:
        damage = f"missing file{'s' if len(missing) > 1 else ''} listed in {MANIFEST}: {', '.join(missing)}"
    entry["damage"] = damage
    return entry


def _manifest_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields of a manifest a listing and its filters use, tolerant of each one's type."""

    def get(key: str, kind: type | tuple[type, ...]) -> Any:
        value = manifest.get(key)
        return value if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) else None

    def items(key: str, kind: type) -> list[Any]:
        value = manifest.get(key)
        return [v for v in value if isinstance(v, kind)] if isinstance(value, list) else []

    devices = items("devices", Mapping)
    hosts = items("hosts", str)
    hosts += [d["host"] for d in devices if isinstance(d.get("host"), str) and d["host"] not in hosts]
    names = list(dict.fromkeys(str(d["name"]) for d in devices if d.get("name") is not None))
    config = manifest.get("config")
    return {
        "id": manifest["run_id"], "task": manifest["task"], "status": manifest["status"],
        "started_at": manifest["started_at"], "finished_at": get("finished_at", str),
        "world_size": get("world_size", int), "hosts": list(dict.fromkeys(hosts)), "devices": names,
        "sweep_id": get("sweep_id", str), "schema_version": get("schema_version", int),
        "exit_code": get("exit_code", int), "reason": get("reason", str), "git_sha": get("git_sha", str),
        "heartbeat_at": get("heartbeat_at", str),
        "files": items("files", str),
        "config": flatten(config) if isinstance(config, Mapping) else {},
        "summary_headline": _summary_headline(manifest.get("summary")),
    }  # fmt: skip


def _stamp_time(stamp: str) -> str:
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).isoformat()


def _stat_key(path: str, dir_stat: os.stat_result) -> list[int]:
    """What must be unchanged for an index entry to stand: the directory (files added or removed),
    the manifest and the rows (mtime and size each)."""
    key = [dir_stat.st_mtime_ns]
    for name in (MANIFEST, ROWS):
        try:
            st = os.stat(os.path.join(path, name))
            key += [st.st_mtime_ns, st.st_size]
        except OSError:
            key += [-1, -1]
    return key


def pick_headline(
    entry_stats: Mapping[str, Mapping[str, Sequence[float]]], kinds: Mapping[str, RowKind]
) -> Headline | None:
    """The best value of the headline metric of the first declared kind in a run's rows (kinds with
    an explicit `headline` first, e.g. train_summary before train)."""
    present = [kinds[k] for k in entry_stats if k in kinds]
    for kind in sorted(present, key=lambda k: k.headline is None):
        metric = kind.metric(kind.headline) if kind.headline else (kind.metrics[0] if kind.metrics else None)
        span = entry_stats[kind.kind].get(metric.name) if metric else None
        if metric and span:
            return Headline(f"{kind.kind}.{metric.name}", span[1] if metric.higher_is_better else span[0], metric.unit)
    return None


TRUNCATED = "last row truncated"
"""The damage of a rows.jsonl whose last line has no newline."""


def _summary(path: Path, entry: Mapping[str, Any], kinds: Mapping[str, RowKind] | None, now: float) -> RunSummary:
    status, damage = entry["status"], entry.get("damage")
    if status == "running":
        beat = parse_time(entry.get("heartbeat_at"))
        # A writer before v3 has no heartbeat; its manifest's mtime is the last sign of life.
        last = beat.timestamp() if beat else (entry.get("manifest_mtime") or now)
        if now - last > HEARTBEAT_TIMEOUT_S:
            status = "abandoned"
        elif damage and TRUNCATED in damage:
            damage = None  # a live writer in the middle of appending a row: not damage (yet)
    stats = entry.get("stats") or {}
    found = pick_headline(stats, kinds) if kinds else None
    if found is None and entry.get("summary_headline"):
        found = Headline(*entry["summary_headline"])
    world = entry.get("world_size")
    return RunSummary(
        id=entry["id"], path=path, task=entry["task"], status=status, started_at=parse_time(entry.get("started_at")),
        finished_at=parse_time(entry.get("finished_at")), world_size=world, hosts=tuple(entry.get("hosts", ())),
        devices=tuple(entry.get("devices", ())), sweep_id=entry.get("sweep_id"), headline=found,
        damage=damage, schema_version=entry.get("schema_version"), exit_code=entry.get("exit_code"),
        reason=entry.get("reason"), git_sha=entry.get("git_sha"), rows=entry.get("rows", 0),
        files=tuple(entry.get("files", ())), config=entry.get("config", {}), row_stats=stats,
        row_types=entry.get("types") or {},
    )  # fmt: skip


def read_run(path: str | os.PathLike, *, kinds: Mapping[str, RowKind] | None = None) -> RunSummary:
    """The summary of one run directory, read now (no index)."""
    path = Path(path)
    entry = _scan(path)
    entry["manifest_mtime"] = _mtime(path / MANIFEST)
    return _summary(path, entry, kinds, time.time())


def _mtime(file: Path) -> float | None:
    try:
        return file.stat().st_mtime
    except OSError:
        return None


def _load_index(results_dir: Path) -> dict[str, Any]:
    """The cached entries by directory name; {} when there is no usable index."""
    try:
        data = json.loads((results_dir / INDEX).read_text(encoding="utf-8"))
        if data.get("version") != _INDEX_VERSION:
            return {}
        schemas = data["schemas"]
        runs = data["runs"]
        for entry in runs.values():
            entry["types"] = schemas[entry.pop("schema")]
        return runs
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return {}


def _save_index(results_dir: Path, runs: dict[str, Any]) -> None:
    """Write the index atomically; the row field types are shared (most runs have the same few)."""
    schemas: dict[str, int] = {}
    out = {}
    for name, entry in runs.items():
        key = json.dumps(entry["types"], sort_keys=True)
        out[name] = {
            **{k: v for k, v in entry.items() if k != "types"},
            "schema": schemas.setdefault(key, len(schemas)),
        }
    data = {"version": _INDEX_VERSION, "schemas": [json.loads(k) for k in schemas], "runs": out}
    # A results dir we may not write (a shared, read-only one) lists without an index.
    with contextlib.suppress(OSError):
        write_atomic(results_dir / INDEX, json.dumps(data, separators=(",", ":")))


def _candidates(results_dir: Path) -> Iterator[os.DirEntry]:
    """Subdirectories that are runs: named like a run id, or holding a manifest."""
    try:
        entries = list(os.scandir(results_dir))
    except FileNotFoundError:
        return
    for item in entries:
        if item.name.startswith(".") or not item.is_dir(follow_symlinks=False):
            continue
        if _RUN_ID.match(item.name) or os.path.exists(os.path.join(item.path, MANIFEST)):
            yield item


_RACY_S = 2.0


def _racy(entry: Mapping[str, Any]) -> bool:
    """True when the run changed so shortly before it was scanned that a later change could keep the
    same mtime (coarse file system clocks) and size: such an entry is read again (as git does)."""
    key = entry.get("key") or [0, 0, 0, 0, 0]
    newest = max(key[0], key[1], key[3]) / 1e9  # the mtimes of the directory, manifest and rows
    return newest >= entry.get("scanned_at", 0.0) - _RACY_S


def _scan_results(results_dir: str | os.PathLike, *, use_index: bool = True) -> dict[str, dict[str, Any]]:
    """Index entries of every run under `results_dir`, by directory name, each fresh: an entry whose
    stat key changed is read again. Rewrites the index when anything changed."""
    results_dir = Path(results_dir)
    cached = _load_index(results_dir) if use_index else {}
    fresh: dict[str, dict[str, Any]] = {}
    changed = False
    for item in _candidates(results_dir):
        try:
            key = _stat_key(item.path, item.stat(follow_symlinks=False))
        except OSError:
            continue  # removed while we looked
        entry = cached.get(item.name)
        if entry is None or entry.get("key") != key or _racy(entry):
            scanned_at = time.time()
            entry = _scan(Path(item.path))
            entry.update(key=key, scanned_at=scanned_at, manifest_mtime=key[1] / 1e9 if key[1] >= 0 else None)
            changed = True
        fresh[item.name] = entry
    if use_index and (changed or set(fresh) != set(cached)):
        _save_index(results_dir, fresh)
    return fresh


def iter_runs(
    results_dir: str | os.PathLike, *, kinds: Mapping[str, RowKind] | None = None, use_index: bool = True
) -> Iterator[RunSummary]:
    """Every run under `results_dir`, oldest first (run ids start with their UTC time).

    Damaged runs come with `damage` set and never stop the listing. `kinds` picks each run's
    headline from its rows; without it (or when no kind matches) the manifest summary's first
    figure is the headline.
    """
    results_dir = Path(results_dir)
    entries = _scan_results(results_dir, use_index=use_index)
    now = time.time()
    for name in sorted(entries):
        yield _summary(results_dir / name, entries[name], kinds, now)


def row_field_types(runs: Iterable[RunSummary]) -> dict[str, str]:
    """The union of the row fields of `runs` with their JSON type codes (as `RunSummary.row_types`;
    a field with several types is `m`, integers and numbers together are `f`)."""
    union: dict[str, str] = {}
    for run in runs:
        for key, code in run.row_types.items():
            seen = union.get(key)
            union[key] = code if seen in (None, code) else _merge_codes(seen, code)
    return union


def _merge_codes(a: str, b: str) -> str:
    """One type for a field seen with two: null gives way to any, integers to numbers, the rest is mixed."""
    if a == "n" or b == "n":
        return b if a == "n" else a
    return "f" if {a, b} == {"i", "f"} else "m"
