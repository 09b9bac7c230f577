"""Named baselines: the run a system or partition is judged against, kept in `<results dir>/baselines.json`.

A name is a system or `system/partition` (e.g. `alps/gpu`). The file maps names to run directory
names (or absolute paths for runs outside the results dir) and is rewritten atomically, so a
reader sees the old set or the new one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import ConfigError
from harness.results.atomic import write_atomic
from harness.results.read import MANIFEST, DamagedRun, RunRef, read_manifest, read_run, run_path

BASELINES = "baselines.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)?$")


@dataclass(frozen=True)
class Baseline:
    """One named baseline."""

    name: str
    run: str
    """The run directory's name under the results dir, or an absolute path."""
    run_id: str
    set_at: str
    """When it was named (ISO 8601, UTC)."""


def baselines(results_dir: str | os.PathLike) -> dict[str, Baseline]:
    """Every named baseline of `results_dir` ({} without a file). Raises ConfigError for a file that
    is not what this module writes."""
    file = Path(results_dir) / BASELINES
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return {name: Baseline(name=name, **entry) for name, entry in data["baselines"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{file} is not a baselines file ({err.__class__.__name__}: {err})") from None


def set_baseline(results_dir: str | os.PathLike, name: str, run: RunRef) -> Baseline:
    """Name `run` the baseline `name` (replacing an earlier one of that name). Refuses a damaged run
    or one that did not finish ok."""
    if not _NAME.match(name):
        raise ConfigError(f"baseline name {name!r}: use SYSTEM or SYSTEM/PARTITION (letters, digits, _ . : -)")
    results_dir = Path(results_dir)
    path = run_path(run).resolve()
    summary = read_run(path)
    if summary.damaged or summary.status != "ok":
        why = summary.damage or f"status {summary.status}"
        raise ConfigError(f"{path} cannot be a baseline: {why}")
    inside = path.parent == results_dir.resolve()
    entry = Baseline(name, path.name if inside else str(path), summary.id,
                     datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
    current = baselines(results_dir)
    current[name] = entry
    data = {"version": 1, "baselines": {n: {k: v for k, v in asdict(b).items() if k != "name"}
                                        for n, b in sorted(current.items())}}  # fmt: skip
    write_atomic(results_dir / BASELINES, json.dumps(data, indent=2) + "\n")
    return entry


def resolve_run(ref: str | os.PathLike, results_dir: str | os.PathLike) -> Path:
    """The run directory `ref` names: a path to a run, a baseline name, or a run id under `results_dir`.
    Raises ConfigError (one line) when it names none."""
    results_dir = Path(results_dir)
    path = Path(ref)
    if (path / MANIFEST).is_file():
        return path
    text = str(ref)
    known = baselines(results_dir)
    if text in known:
        found = Path(known[text].run)
        found = found if found.is_absolute() else results_dir / found
        if not (found / MANIFEST).is_file():
            raise ConfigError(f"baseline {text!r} names {found}, which holds no run")
        return found
    if (results_dir / text / MANIFEST).is_file():
        return results_dir / text
    names = ", ".join(sorted(known)) or "none"
    raise ConfigError(
        f"{text!r} is neither a run directory, a run id under {results_dir}, nor a baseline (known: {names})"
    )


def baseline_of(run: RunRef, results_dir: str | os.PathLike) -> list[str]:
    """The baseline names that point at `run` (for `show`)."""
    try:
        run_id = read_manifest(run_path(run))["run_id"]
    except DamagedRun:
        return []
    return [b.name for b in baselines(results_dir).values() if b.run_id == run_id]
