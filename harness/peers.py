"""What the ranks of a job know of each other when one fails: each rank's error left in the
rendezvous store, a heartbeat per rank, the flight recorder's dump and the collective it hung
in, and ranks that end with their supervisor. Rank 0 reads these to name who failed first
(harness.runner, harness.faults)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

from harness.dist import DistContext

_ERROR_KEY = "harness/error/{}"


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when the process that started this one dies (Linux
    PR_SET_PDEATHSIG): ranks of a supervisor killed by SIGKILL end instead of running on as
    orphans. Nothing happens where the call is not available."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the request: end now
        os.kill(os.getpid(), signal.SIGTERM)


def report_error(ctx: DistContext, kind: str, message: str) -> None:
    """Leave this rank's error ('failed' or 'interrupted') in the rendezvous store, where rank 0
    can read it after the peer is gone (a peer's failure only shows on rank 0 as a broken
    connection otherwise)."""
    import torch.distributed as dist

    with contextlib.suppress(Exception):
        stamp = f"{kind}|{time.time():.3f}|{message[:2000]}"
        dist.distributed_c10d._get_default_store().set(_ERROR_KEY.format(ctx.rank), stamp)


def peer_errors(ctx: DistContext) -> list[tuple[int, tuple[str, str, float]]]:
    """(rank, (kind, message, time)) for every rank that reported an error through the store."""
    import torch.distributed as dist

    found: list[tuple[int, tuple[str, str, float]]] = []
    with contextlib.suppress(Exception):
        store = dist.distributed_c10d._get_default_store()
        for rank in range(ctx.world_size):
            key = _ERROR_KEY.format(rank)
            if store.check([key]):
                kind, stamp, message = store.get(key).decode(errors="replace").split("|", 2)
                found.append((rank, (kind, message, float(stamp))))
    return found


_HEARTBEAT_KEY = "harness/heartbeat/{}"


class Heartbeat:
    """A thread that stamps this rank's heartbeat into the rendezvous store every `interval_s`
    (through a connection of its own, so that it never waits behind the main thread). A rank
    that is stopped or stuck in the kernel stops stamping; rank 0 then names it."""

    def __init__(self, ctx: DistContext, interval_s: float = 1.0) -> None:
        self.ctx, self.interval_s = ctx, interval_s
        self._stop = threading.Event()
        self._store = _store_client(ctx)
        self._thread = threading.Thread(target=self._beat, name="harness-heartbeat", daemon=True)
        if self._store is not None:
            self._thread.start()

    def _beat(self) -> None:
        key = _HEARTBEAT_KEY.format(self.ctx.rank)
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a store gone with its host: nothing to stamp into
                self._store.set(key, repr(time.time()))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()


def _store_client(ctx: DistContext) -> Any:
    import torch.distributed as dist

    try:
        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                             timeout=timedelta(seconds=5), wait_for_workers=False)  # fmt: skip
    except Exception:
        return None


def heartbeat_ages(ctx: DistContext) -> dict[int, float | None]:
    """Seconds since each rank's last heartbeat (None: never seen), as rank 0 finds them; empty
    when the store cannot be reached (nothing is known then, and no rank is blamed)."""
    store = _store_client(ctx)
    ages: dict[int, float | None] = {}
    if store is None:
        return ages
    now = time.time()
    for rank in range(ctx.world_size):
        key = _HEARTBEAT_KEY.format(rank)
        try:
            ages[rank] = now - float(store.get(key).decode()) if store is not None and store.check([key]) else None
        except Exception:
            ages[rank] = None
    return ages


def flight_record() -> bytes | None:
    """This rank's flight recorder as JSON: the collectives it issued, and how far each got."""
    with contextlib.suppress(Exception):
        import torch._C._distributed_c10d as c10d

        return bytes(c10d._dump_fr_trace_json(True, True))
    return None


def read_flight_record(data: bytes) -> dict[str, Any] | None:
    """A dump of flight_record() as a dict (None if it is not one)."""
    try:
        dump = json.loads(data)
    except ValueError:
        return None
    return dump if isinstance(dump, dict) else None


def hung_collective(dump: dict[str, Any], failed_in_collective: bool = False) -> str | None:
    """The collective a flight recorder dump was waiting in: the first one enqueued but never
    completed, e.g. 'gloo:all_reduce #17 of default_pg (16 completed)'. gloo retires a collective
    that timed out as completed, so when this rank failed in a collective (a timeout, a reset:
    failed_in_collective) and none is pending, it is the last one the rank issued."""
    data = dump
    entries = data.get("entries") or []

    def name(entry: dict[str, Any], pg: str, note: str) -> str:
        group = (entry.get("process_group") or ["", pg])[-1]
        return f"{entry.get('profiling_name')} #{entry.get('collective_seq_id')} of {group} ({note})"

    for pg, status in (data.get("pg_status") or {}).items():
        done = int(status.get("last_completed_collective", -1))
        if int(status.get("last_enqueued_collective", -1)) > done:
            for entry in entries:
                if str(entry.get("pg_id")) == str(pg) and int(entry.get("collective_seq_id", -1)) == done + 1:
                    return name(entry, pg, f"{done} completed")
    collectives = [e for e in entries if int(e.get("collective_seq_id", -1)) >= 0]
    if failed_in_collective and collectives:
        last = collectives[-1]
        return name(last, str(last.get("pg_id")), "the last this rank issued")
    return None
