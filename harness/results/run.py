"""Run directories: create, record rows, finish, read back. The only writer under results/.

Life of a record: `RunRecord.create` writes manifest.json with status `running`; `add_rows`
appends to rows.jsonl as figures arrive, whole lines in one write (so a crash keeps what was
measured, under a manifest that does not say `ok`); `finish` writes the final status and the row
counts, and makes the files read-only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.results import provenance
from harness.results.atomic import write_atomic, write_json_atomic, write_jsonl_atomic
from harness.results.schema import SCHEMA_VERSION, validate_manifest, validate_row

MANIFEST = "manifest.json"
ROWS = "rows.jsonl"
JOB_FILE = "config.json"
"""The job a run was started with (harness.config.job): what its ranks read and rerun replays."""
CONSOLE_LOG = "console.log"
"""What the run printed (rank 0), as it printed it."""
STATUSES = ("running", "ok", "failed", "interrupted")
REASONS = ("ok", "failed", "bad_input", "interrupted", "preempted")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id(task: str) -> str:
    """'<UTC timestamp>-<task>-<6 hex>', which sorts by time and is unique without coordination."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{task}-{secrets.token_hex(3)}"


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such figures are written as null (and fail their row)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class RecordError(OSError):
    """The run record could not be written (a full disk, an I/O error): one line says so."""


OWN_IDS = frozenset({"results.run_id", "results.sweep_id"})
"""Config keys the harness fills itself: never taken for secrets, whatever they look like."""
HEARTBEAT_S = 10.0
"""How often a running record stamps heartbeat_at (readers call a run abandoned after 60 s)."""


@dataclass
class RunRecord:
    """One run directory, owned by rank 0 (or the local launcher when rank 0 is gone).

    Every write goes through `_guard`: a full disk or an I/O error becomes a RecordError with
    one line, and `finish` then leaves no manifest claiming `running` behind."""

    path: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    """The rows `load` read back. A writer does not keep the rows it adds (a long run would hold
    every step's row in memory): it counts them."""
    _log: Any = field(default=None, repr=False)
    _lock: Any = field(default_factory=threading.RLock, repr=False)
    _beat: Any = field(default=None, repr=False)
    _n_rows: int = field(default=0, repr=False)
    _n_failed: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self._n_rows = len(self.rows)
        self._n_failed = sum(1 for row in self.rows if row.get("passed") is False)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @classmethod
    def create(
        cls,
        results_dir: str | Path,
        *,
        task: str,
        config: dict[str, Any],
        launcher: str,
        world_size: int,
        run_id: str | None = None,
        sweep_id: str | None = None,
        keep: frozenset[str] = frozenset(),
    ) -> RunRecord:
        """Make the run directory (and results_dir) and write its first manifest (status
        `running`). `config` is recorded with credential-named keys redacted, except the dotted
        keys in `keep` (those the schema declares as numbers or sizes)."""
        run_id = run_id or new_run_id(task)
        path = Path(results_dir) / run_id
        # `harness slurm submit` makes the folder (with the job script) before the job starts.
        with _guard(path, "make the run directory"):
            path.mkdir(parents=True, exist_ok=True)
        if (path / MANIFEST).exists():
            raise FileExistsError(f"{path} already holds a run")
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "task": task,
            "status": "running",
            "started_at": utc_now(),
            "finished_at": None,
            "config": provenance.redact(config, keep | OWN_IDS),
            **provenance.git_sha(),
            "versions": provenance.versions(),
            "launcher": launcher,
            "world_size": world_size,
            "hosts": [socket.gethostname()],
            "devices": [],
            "env": provenance.environment(),
            "rows": 0,
            "failed_rows": 0,
            "notes": [],
            "summary": {},
            "files": [],
            "error": None,
            "exit_code": None,
            "reason": None,
            "sweep_id": sweep_id,
            "heartbeat_at": utc_now(),
        }
        record = cls(path, manifest)
        record._write_manifest()
        return record

    def start_heartbeat(self, interval_s: float = HEARTBEAT_S) -> None:
        """Stamp heartbeat_at every interval_s until finish: a record whose owner died stops
        beating, and readers call it abandoned rather than running for ever."""

        def beat() -> None:
            while not stop.wait(interval_s):
                # Under the lock, and only while the record is open: a stamp computed before
                # finish and written after it would put stale counts over the final manifest.
                with self._lock, contextlib.suppress(OSError):  # a full disk: the next stamp may get through
                    if stop.is_set():
                        return
                    _sync(self.path / ROWS)
                    self.update(heartbeat_at=utc_now(), **self._counts())

        stop = threading.Event()
        self._beat = stop
        threading.Thread(target=beat, name="harness-record-heartbeat", daemon=True).start()

    def update(self, **fields: Any) -> None:
        """Change manifest fields (hosts, devices, ...) and rewrite it."""
        with self._lock:
            self.manifest.update(fields)
            self._write_manifest()

    def add_notes(self, *lines: str) -> None:
        """Append remarks to the manifest's notes (each once)."""
        self.update(notes=list(dict.fromkeys([*self.manifest.get("notes", []), *lines])))

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append rows (each validated against the row schema) to rows.jsonl.

        One write of whole lines, so a step's row costs the same at step 100,000 as at step 1
        (rewriting the file each time made a long run quadratic), and a process that dies leaves
        at most a torn last line, which readers report and `close_if_unfinished` drops. A write
        that fails (a full disk) is cut back to the rows before it. The file is synced to disk
        with each heartbeat and at `finish`, which also write the manifest's row counts: readers
        count a running run's rows from the file."""
        new = []
        for row in rows:
            row = _finite({"run_id": self.run_id, **row})
            validate_row(row, SCHEMA_VERSION)  # what this harness writes is always the current version
            new.append(row)
        data = "".join(json.dumps(row, default=str) + "\n" for row in new).encode("utf-8")
        with self._lock, _guard(self.path, f"write {ROWS}"):
            # Counted first, uncounted if the write fails: a signal between the two must not
            # leave rows on disk that the manifest does not count.
            self._n_rows += len(new)
            self._n_failed += sum(1 for row in new if not row["passed"])
            try:
                _append(self.path / ROWS, data)
            except BaseException:
                self._n_rows -= len(new)
                self._n_failed -= sum(1 for row in new if not row["passed"])
                raise

    def _counts(self) -> dict[str, int]:
        """The manifest's `rows` and `failed_rows`."""
        return {"rows": self._n_rows, "failed_rows": self._n_failed}

    def add_file(self, name: str, data: bytes) -> None:
        """Write a further file (a plot) into the run directory, atomically, and list it."""
        if "/" in name or name in (MANIFEST, ROWS) or name.startswith("."):
            raise ValueError(f"not a file name for a run directory: {name!r}")
        with _guard(self.path, f"write {name}"):
            write_atomic(self.path / name, data)
        self.update(files=sorted({*self.manifest.get("files", []), name}))

    def console_log(self) -> Any:
        """console.log of this run, open for appending (closed by finish)."""
        if self._log is None:
            with _guard(self.path, f"open {CONSOLE_LOG}"):
                self._log = _QuietLog(open(self.path / CONSOLE_LOG, "a", encoding="utf-8"))  # noqa: SIM115
            self.update(files=sorted({*self.manifest.get("files", []), CONSOLE_LOG}))
        return self._log

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def finish(self, status: str, error: str | None = None, *, exit_code: int | None = None,
               reason: str | None = None) -> None:  # fmt: skip
        """Write the final status, exit code and reason, then make the record read-only."""
        if status not in STATUSES[1:]:
            raise ValueError(f"final status must be one of {STATUSES[1:]}, got {status!r}")
        if reason is not None and reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        if exit_code is None:
            exit_code = {"ok": 0, "interrupted": 130}.get(status, 1)
        if reason is None:
            reason = {"ok": "ok", "interrupted": "interrupted"}.get(status, "failed")
        if self._beat is not None:
            with self._lock:  # a stamp under way ends first; none starts after this
                self._beat.set()
        self.close_log()
        final = {"status": status, "finished_at": utc_now(), "error": error, "exit_code": exit_code, "reason": reason,
                 **self._counts()}  # fmt: skip
        try:
            with _guard(self.path, f"write {ROWS}"):
                if (self.path / ROWS).exists():
                    _sync(self.path / ROWS)  # the rows on disk before a manifest that counts them
                else:
                    write_jsonl_atomic(self.path / ROWS, self.rows)
            self.update(**final)
        except RecordError as exc:
            # An incomplete record is never `ok`: it says what could not be written.
            said = error if error and exc.strerror in error else "; ".join(e for e in (error, exc.strerror) if e)
            failed = {"status": "failed", "reason": "failed", "exit_code": exit_code or 1, "error": said}
            self._last_word(final | failed)
            raise
        for name in (MANIFEST, ROWS, JOB_FILE, *self.manifest.get("files", [])):
            if (self.path / name).exists():
                os.chmod(self.path / name, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)

    def _write_manifest(self) -> None:
        # Error texts quote what failed (a URL, a command line): no credential goes through.
        for key in ("error", "notes", "failures"):
            if self.manifest.get(key):
                self.manifest[key] = provenance.redact(self.manifest[key])
        validate_manifest(self.manifest)
        with _guard(self.path, f"write {MANIFEST}"):
            write_json_atomic(self.path / MANIFEST, self.manifest)

    def _last_word(self, final: dict[str, Any]) -> None:
        """The manifest could not be finished (a full disk): never leave one that says running.
        Its old copy goes (which frees its blocks), then a minimal final one is tried; if even
        that does not fit, the run directory has no manifest and reads as damaged."""
        with contextlib.suppress(OSError):
            (self.path / MANIFEST).unlink()
        keep = ("schema_version", "run_id", "task", "started_at", "config", "git_sha", "versions", "launcher",
                "world_size", "hosts", "devices", "rows", "failed_rows", "files", "sweep_id", "failures",
                "flight_recorder")  # fmt: skip
        minimal = {k: self.manifest[k] for k in keep if k in self.manifest} | final | {
            "config": {}, "devices": [], "versions": {"python": None, "torch": None}}  # fmt: skip
        with contextlib.suppress(OSError):
            write_json_atomic(self.path / MANIFEST, minimal)

    def amend(self, **fields: Any) -> None:
        """Change a finished record (the supervisor naming who failed first): the files stay
        read-only around it."""
        target = self.path / MANIFEST
        with self._lock:
            with contextlib.suppress(OSError):
                os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
            try:
                self.update(**fields)
            finally:
                with contextlib.suppress(OSError):
                    os.chmod(target, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """Read a run directory back (manifest and rows; a torn last row, left by a writer that
        died mid-write, is not read)."""
        path = Path(path)
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        rows_file = path / ROWS
        text = rows_file.read_text(encoding="utf-8") if rows_file.exists() else ""
        whole = text[: text.rfind("\n") + 1]  # every row the writer writes ends with a newline
        rows = [json.loads(line) for line in whole.splitlines() if line.strip()]
        return cls(path, manifest, rows)


def _append(path: Path, data: bytes) -> None:
    """Append `data` to `path` (made if need be) in one O_APPEND write; on an error, even one
    that close reports (a delayed write error), cut the file back to its size before, so that
    no part of `data` stays."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    before = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:  # a regular file takes it all in one write unless the disk fills
            view = view[os.write(fd, view) :]
        os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, before)
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _sync(path: Path) -> None:
    """fsync a file if it exists (rows.jsonl is appended to without: once per heartbeat and at
    finish is enough to survive a node crash with all but the last seconds' rows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_torn_row(path: str | Path) -> bool:
    """Cut a torn last line (no newline: its writer died mid-write) off a run's rows.jsonl. True
    when one was cut. Reads only the file's tail (a row is far shorter than TAIL_BYTES)."""
    rows_file = Path(path) / ROWS
    with _guard(Path(path), f"repair {ROWS}"):
        try:
            fh = open(rows_file, "r+b")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return False
        with fh:
            size = fh.seek(0, os.SEEK_END)
            end = size
            while end > 0:
                start = max(0, end - TAIL_BYTES)
                fh.seek(start)
                chunk = fh.read(end - start)
                if end == size and chunk.endswith(b"\n"):
                    return False  # whole rows only
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    fh.truncate(start + newline + 1)
                    return True
                end = start
            fh.truncate(0)  # one torn row and nothing before it
            return size > 0


TAIL_BYTES = 1 << 16
"""How much of rows.jsonl `drop_torn_row` reads at a time, from the end."""


def close_if_unfinished(path: str | Path, status: str, error: str, *, exit_code: int | None = None) -> bool:
    """Mark a run that is still `running` as `status` (its rank 0 died before it could).

    Returns True when the record was closed here. Used by the local launcher, which outlives
    its ranks; a record that rank 0 finished is left as it is.
    """
    path = Path(path)
    if not (path / MANIFEST).exists():
        return False
    record = RunRecord.load(path)
    if record.manifest.get("status") != "running":
        return False
    if drop_torn_row(path):
        record.add_notes(f"the last row of {ROWS} was cut off mid-write and was dropped")
    record.finish(status, error, exit_code=exit_code)
    return True


SWEEPS = "sweeps"


def write_sweep_summary(results_dir: str | Path, sweep_id: str, entries: list[dict[str, Any]]) -> Path:
    """sweeps/<sweep id>/summary.json under a results directory: one entry per element."""
    folder = Path(results_dir) / SWEEPS / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.json"
    write_json_atomic(path, {"sweep_id": sweep_id, "written_at": utc_now(), "runs": entries})
    return path


def write_job_file(run_dir: Path, name: str, data: dict[str, Any]) -> Path:
    """The job file of a run directory (made here if need be), written atomically."""
    with _guard(run_dir, f"write {name}"):
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / name
        write_atomic(path, json.dumps(data, indent=2) + "\n")
    return path


def write_rank_file(run_dir: Path, name: str, data: bytes) -> Path | None:
    """A file a rank leaves in its run directory while failing (its flight recorder dump, under
    a subfolder): best effort, None when it could not be written."""
    path = Path(run_dir) / name
    if not Path(run_dir).is_dir():  # never a run directory of its own: only rank 0 creates one
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except OSError:
        return None
    return path


def discard_unrecorded(run_dir: Path) -> bool:
    """Remove a run directory that has no manifest (none could be written: a full disk), with
    what its ranks left in it, so that no folder is taken for a result. A directory with a
    manifest is never touched. True when it is gone."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).exists():
        return False
    for path in sorted(run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    try:
        run_dir.rmdir()
    except OSError:
        return False
    return True


class _QuietLog:
    """console.log: a copy of what is printed. A full disk must not stop the run from printing
    to its terminal, so its write errors are swallowed (the run's record says what failed)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            self.handle.write(provenance.scrub(text))
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.handle.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.handle.close()


@contextlib.contextmanager
def _guard(path: Path, what: str) -> Iterator[None]:
    """OSError from the disk (ENOSPC, EIO, EDQUOT, EROFS) as a RecordError of one line."""
    try:
        yield
    except RecordError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise RecordError(exc.errno, f"cannot {what} in {path}: {exc.strerror}") from None
        raise
