"""Naming the first failure among many (harness.faults)."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import pytest

from harness import faults, runner
from harness.errors import RunInterrupted
from harness.faults import Failure
from harness.peers import hung_collective, read_flight_record


def test_a_killed_rank_is_first_and_the_survivors_resets_follow() -> None:
    seen = faults.rank_order([
        Failure(0, "n1", "RuntimeError: Connection reset by peer", "2026-12-03T10:00:01Z"),
        Failure(1, "n2", "killed by SIGKILL", "2026-12-03T10:00:00Z", signal="SIGKILL"),
    ])  # fmt: skip
    assert [(f.rank, f.role) for f in seen] == [(1, "first"), (0, "consequence")]
    assert faults.describe(seen).startswith("rank 1 on n2: killed by SIGKILL at 2026-12-03T10:00:00Z; then: rank 0")


def test_an_error_of_its_own_beats_a_timeout_and_a_hang_beats_a_timeout() -> None:
    own = faults.rank_order([Failure(0, None, "RuntimeError: timed out after 600 s"),
                             Failure(3, None, "ValueError: bad shard")])  # fmt: skip
    assert own[0].rank == 3
    stale = "stopped answering (last heartbeat 11 s before rank 0 gave up)"
    hang = faults.rank_order([Failure(0, None, "RuntimeError: Timed out waiting 10000ms"), Failure(2, None, stale)])
    assert hang[0].rank == 2


def test_the_launchers_own_kill_is_never_the_cause() -> None:
    exits = faults.from_exits("n1", {0: (1, 100.0, False), 1: (-9, 100.0, True)})
    assert exits[1].teardown and exits[1].what == "ended by the launcher with SIGKILL"
    # Rank 0 saw rank 1 stop answering; the supervisor then killed the stopped rank.
    recorded = [Failure(1, "n1", "stopped answering (last heartbeat 11 s before rank 0 gave up)"),
                Failure(0, "n1", "RuntimeError: Timed out waiting 10000ms")]  # fmt: skip
    merged = faults.merge(recorded, exits)
    assert merged[0].rank == 1 and merged[0].role == "first"
    assert merged[0].what.endswith(", then ended by the launcher with SIGKILL")
    assert not merged[0].teardown


def test_a_signal_the_supervisor_saw_adds_to_what_rank_0_recorded() -> None:
    recorded = [Failure(1, "n2", "exit code 1")]
    merged = faults.merge(recorded, faults.from_exits("n2", {1: (-11, 50.0, False)}))
    assert (merged[0].signal, merged[0].what) == ("SIGSEGV", "killed by SIGSEGV")
    assert merged[0].to_dict().keys() >= {"rank", "host", "what", "signal", "role"}
    assert "teardown" not in merged[0].to_dict()


def test_the_hung_collective_is_read_from_a_flight_recorder_dump() -> None:
    dump = {"pg_status": {"0": {"last_enqueued_collective": 18, "last_completed_collective": 17}},
            "entries": [{"pg_id": 0, "collective_seq_id": 17, "profiling_name": "gloo:all_reduce",
                         "process_group": ["0", "default_pg"]},
                        {"pg_id": 0, "collective_seq_id": 18, "profiling_name": "gloo:broadcast",
                         "process_group": ["0", "default_pg"]}]}  # fmt: skip
    assert hung_collective(dump) == "gloo:broadcast #18 of default_pg (17 completed)"
    done = {"pg_status": {"0": {"last_enqueued_collective": 18, "last_completed_collective": 18}}, "entries": []}
    assert hung_collective(done) is None
    # gloo retires a collective that timed out: the one a rank failed in is the last it issued.
    retired = {**dump, "pg_status": {"0": {"last_enqueued_collective": 18, "last_completed_collective": 18}}}
    assert hung_collective(retired) is None
    assert hung_collective(retired, failed_in_collective=True) == (
        "gloo:broadcast #18 of default_pg (the last this rank issued)"
    )
    assert read_flight_record(b"not a dump") is None
    assert read_flight_record(json.dumps(dump).encode()) == dump


def test_a_rank_signalled_as_its_supervisor_dies_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent-death SIGTERM comes when the supervisor's thread that started the rank exits;
    under SIGKILL the handler can run while getppid() still names the dying supervisor (seen in
    CI: 'rank 0: interrupted by SIGTERM'). The record says the supervisor died all the same."""
    parents = iter([4242, 1])  # the handler's look, then the supervisor gone
    monkeypatch.setattr(runner, "_parent", [4242])
    monkeypatch.setattr(runner, "_signalled", [])
    monkeypatch.setattr(runner.os, "getppid", lambda: next(parents, 1))
    with pytest.raises(RunInterrupted) as caught:
        runner._on_signal(signal.SIGTERM, None)
    assert str(caught.value) == "interrupted by SIGTERM"
    job = SimpleNamespace(task="bench")
    outcome = runner._failure(SimpleNamespace(rank=0), job, caught.value)  # type: ignore[arg-type]
    assert outcome.status == "interrupted" and outcome.error == f"rank 0: interrupted by SIGTERM: {runner.ORPHANED}"
