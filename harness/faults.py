"""Who failed: the first failure of a run, and the failures that followed from it.

On thousands of GPUs one rank dies and every other rank then fails too (a connection reset by
the dead peer, a collective that times out). A manifest that blames the first survivor to notice
sends an admin to the wrong node. So every failure is kept with its rank, host, how it ended and
when, and one is named first:

1. a rank killed by a signal (seen by the supervisor: SIGKILL, SIGSEGV, a node's OOM killer);
2. a rank whose own error is not a consequence of another's (an exception in the task);
3. a rank that stopped answering (its heartbeat went stale while the others waited: a hang);
4. otherwise the lowest rank.

The rest are listed after it as consequences.
"""

from __future__ import annotations

import re
import signal
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

CONSEQUENCE = re.compile(
    r"connection (reset|closed|refused)|broken pipe|timed out|timeout|distnetworkerror|socket|"
    r"communicator was aborted|peer .*(closed|failed)|interrupted by SIGTERM|read error|recv|send\b",
    re.IGNORECASE,
)
"""Errors a rank gets because another rank failed, not because of anything it did itself."""


@dataclass(frozen=True)
class Failure:
    """How one rank ended badly."""

    rank: int | None
    host: str | None
    what: str
    """'killed by SIGKILL', 'exit code 1', 'RuntimeError: boom', 'stopped answering: ...'."""
    time: str | None = None
    """ISO time, UTC, when known."""
    exit_code: int | None = None
    signal: str | None = None
    role: str = "consequence"
    """first | consequence."""
    teardown: bool = False
    """Ended by the launcher tearing the job down after another rank failed (its SIGTERM, then
    SIGKILL after launch.grace_s): never the cause."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    def text(self) -> str:
        where = f"rank {self.rank}" if self.rank is not None else "a rank"
        where += f" on {self.host}" if self.host else ""
        when = f" at {self.time}" if self.time else ""
        return f"{where}: {self.what}{when}"


def is_consequence(message: str) -> bool:
    """True for the errors a rank gets when a peer fails (resets, timeouts, SIGTERM from the launcher)."""
    return bool(CONSEQUENCE.search(message))


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def from_exit(rank: int, host: str | None, exitcode: int, timestamp: float | None, teardown: bool = False) -> Failure:
    """A process's end as its parent saw it: a signal (negative code) or an exit code."""
    when = iso(timestamp) if timestamp else None
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        what = f"ended by the launcher with {name}" if teardown else f"killed by {name}"
        return Failure(rank, host, what, when, None, name, teardown=teardown)
    return Failure(rank, host, f"exit code {exitcode}", when, exitcode, teardown=teardown)


def from_exits(host: str | None, exits: dict[int, tuple[int, float | None, bool]]) -> list[Failure]:
    """The supervisor's view of its failed ranks, {rank: (exit code, time, torn down)}; torn
    down: the rank was still running when the launcher began stopping the job."""
    return [from_exit(rank, host, code, t, teardown=torn) for rank, (code, t, torn) in sorted(exits.items())]


def rank_order(failures: list[Failure]) -> list[Failure]:
    """The failures with the first one named (see the module docstring), the rest after it."""
    if not failures:
        return []

    def key(f: Failure) -> tuple[int, int]:
        if f.teardown:
            tier = 4
        elif f.signal and f.signal not in ("SIGTERM", "SIGINT"):
            tier = 0
        elif f.what.startswith("stopped answering"):
            tier = 2
        elif not is_consequence(f.what) and not f.what.startswith("exit code"):
            tier = 1
        else:
            tier = 3
        return tier, f.rank if f.rank is not None else 1 << 30

    ordered = sorted(failures, key=key)
    return [replace(ordered[0], role="first"), *(replace(f, role="consequence") for f in ordered[1:])]


def merge(*groups: list[Failure]) -> list[Failure]:
    """One failure per rank from what several observers saw (rank 0's store, the supervisor):
    the most telling description, with the exit code, signal and earliest time either knew."""
    by_rank: dict[Any, Failure] = {}
    for group in groups:
        for f in group:
            seen = by_rank.get(f.rank)
            if seen is None:
                by_rank[f.rank] = f
                continue
            best, other = (f, seen) if _weight(f) > _weight(seen) else (seen, f)
            if other.teardown:  # what the rank did first; the launcher's kill only follows it
                what = f"{best.what}, then {other.what}" if other.signal else best.what
                by_rank[f.rank] = replace(best, host=best.host or other.host, what=what)
                continue
            times = [t for t in (best.time, other.time) if t]
            by_rank[f.rank] = replace(best, host=best.host or other.host, time=min(times) if times else None,
                                      exit_code=best.exit_code if best.exit_code is not None else other.exit_code,
                                      signal=best.signal or other.signal)  # fmt: skip
    return rank_order(list(by_rank.values()))


def _weight(f: Failure) -> int:
    # A signal beats an error message, which beats a bare exit code; the launcher's own kill
    # says least.
    return 0 if f.teardown else 3 if f.signal else 1 if f.what.startswith("exit code") else 2


def describe(failures: list[Failure]) -> str:
    """'rank 1 on n3: killed by SIGKILL at ...; then: rank 0 on n1: ConnectionResetError ...'."""
    if not failures:
        return ""
    first, *rest = failures
    text = first.text()
    if rest:  # the consequences in short: their full text stays in the manifest's failures
        text += "; then: " + "; ".join(replace(f, what=_short(f.what)).text() for f in rest)
    return text[:4000]


def _short(what: str, limit: int = 160) -> str:
    return what if len(what) <= limit else what[: limit - 3].rstrip() + "..."
