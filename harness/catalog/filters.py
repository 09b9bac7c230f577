"""Which runs a `harness results` command looks at: filters over run summaries.

Every filter is optional; a run must pass all that are set. Filters read only the summary (the
index), never the rows, so filtering 10,000 runs costs no more than listing them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from harness.errors import ConfigError
from harness.results.read import RunSummary, parse_time


@dataclass(frozen=True)
class RunFilter:
    """What to keep. Strings compare exactly except `device_name` (a case-insensitive substring)."""

    task: str | None = None
    status: str | None = None
    """A run status (ok, failed, running, abandoned, ...), or `damaged` for runs with a damage reason."""
    host: str | None = None
    """A host the run used (manifest hosts or a device's host)."""
    device_name: str | None = None
    config: tuple[tuple[str, str], ...] = ()
    """(dotted key, value) pairs that must match the manifest's config, e.g. ('bench.dtype', 'bfloat16')."""
    since: datetime | None = None
    """Runs started at or after this time (aware, UTC when parsed from a date)."""
    until: datetime | None = None
    """Runs started before this time (a date given as `until` includes that whole day)."""
    sweep: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        task: str | None = None,
        status: str | None = None,
        host: str | None = None,
        device_name: str | None = None,
        config: Iterable[str] = (),
        since: str | None = None,
        until: str | None = None,
        sweep: str | None = None,
    ) -> RunFilter:
        """A filter from command-line strings: config as `key=value`, since/until as ISO dates or times.
        Raises ConfigError for a malformed one."""
        pairs = tuple(parse_config_match(text) for text in config)
        return cls(task=task, status=status, host=host, device_name=device_name, config=pairs,
                   since=parse_bound(since, end=False), until=parse_bound(until, end=True), sweep=sweep)  # fmt: skip

    def matches(self, run: RunSummary) -> bool:
        """True when `run` passes every filter that is set."""
        if self.task is not None and run.task != self.task:
            return False
        if self.status is not None and not (run.status == self.status or (self.status == "damaged" and run.damaged)):
            return False
        if self.host is not None and self.host not in run.hosts:
            return False
        if self.device_name is not None and not any(self.device_name.lower() in d.lower() for d in run.devices):
            return False
        if self.sweep is not None and run.sweep_id != self.sweep:
            return False
        if (self.since or self.until) and not _in_range(run.started_at, self.since, self.until):
            return False
        return all(config_matches(run.config, key, value) for key, value in self.config)


def select(runs: Iterable[RunSummary], run_filter: RunFilter | None = None) -> Iterator[RunSummary]:
    """The runs that pass `run_filter` (all of them without one)."""
    return iter(runs) if run_filter is None else (r for r in runs if run_filter.matches(r))


def parse_config_match(text: str) -> tuple[str, str]:
    """'bench.dtype=bfloat16' -> ('bench.dtype', 'bfloat16')."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"config filter {text!r} is not KEY=VALUE (e.g. bench.dtype=bfloat16)")
    return key.strip(), value.strip()


def parse_bound(text: str | None, *, end: bool) -> datetime | None:
    """An ISO date or time as an aware datetime. A plain date as an end bound means the end of that day."""
    if text is None or text == "":
        return None
    when = parse_time(text)
    if when is None:
        raise ConfigError(f"{text!r} is not an ISO date or time (e.g. 2026-11-28 or 2026-11-28T03:10:00Z)")
    if end and len(text.strip()) == 10:  # YYYY-MM-DD: the whole day is in the range
        when += timedelta(days=1)
    return when


def _in_range(started: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if started is None:
        return False
    return (since is None or started >= since) and (until is None or started < until)


def config_matches(config: Mapping[str, Any], key: str, wanted: str) -> bool:
    """Whether the flattened config's `key` has the value `wanted` (command-line text).

    `wanted` is read as JSON when it is JSON (5, 5.0, true, null, "x") and as text otherwise, so
    `bench.iters=5` matches 5 and `bench.dtype=bfloat16` matches "bfloat16"; for a list value,
    one element equal to `wanted` is enough (bench.names=gemm matches ["gemm", "all_reduce"]).
    """
    if key not in config:
        return False
    value = config[key]
    try:
        parsed: Any = json.loads(wanted)
    except ValueError:
        parsed = wanted
    candidates = value if isinstance(value, list) else [value]
    return any(_equal(v, parsed) or _text(v) == wanted for v in candidates) or _text(value) == wanted


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
