"""Synthetic run directories for the `harness results` tests, and checks that they look like real ones.

`write_run` hand-writes a run (any schema version, any status, fast); `record_run` goes through the
real writer, `harness.results.RunRecord`. The row kinds are declared here as the plug-ins will
declare them.
"""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness.results import SCHEMA_VERSION, RunRecord, validate_manifest, validate_row
from harness.results.kinds import Metric, RowKind

V1_RUN = Path(__file__).resolve().parents[1] / "data" / "v1-run"
KINDS = {
    "all_reduce": RowKind("all_reduce", ("op", "dtype", "bytes", "in_place", "redop", "world_size", "group"),
                          (Metric("busbw_gbps", "GB/s"), Metric("algbw_gbps", "GB/s"),
                           Metric("time_us", "us", higher_is_better=False))),
    "gemm": RowKind("gemm", ("dtype", "m", "n", "k", "rank"), (Metric("tflops", "TFLOP/s"),)),
    "train_summary": RowKind("train_summary", ("world_size",), (Metric("tokens_per_s", "tokens/s"),),
                             headline="tokens_per_s"),
    "train": RowKind("train", ("step",), (Metric("loss", "", higher_is_better=False),)),
}  # fmt: skip
# The key the current writer validates rows with: `bench` until schema v3, `kind` from it.
WRITER_KIND = "kind" if SCHEMA_VERSION >= 3 else "bench"
T0 = datetime(2026, 11, 28, 3, 0, tzinfo=timezone.utc)


def iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gemm_rows(scale: float = 1.0, *, noise: float = 0.01, dtypes=("float32", "bfloat16"), ranks: int = 2,
              host: str = "vm", key: str = "kind", uuid: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Two shapes per dtype per rank; TFLOP/s scaled by `scale`, timing spread (median-min)/median = noise."""
    rows = []
    for dtype in dtypes:
        for m, n, k in ((128, 128, 128), (256, 64, 32)):
            for rank in range(ranks):
                tflops = 0.1 * scale * (1 + 0.1 * rank) * (2 if dtype == "bfloat16" else 1)
                time_us = 2 * m * n * k / (tflops * 1e12) * 1e6
                row = {key: "gemm", "dtype": dtype, "m": m, "n": n, "k": k, "shape": f"{m}x{n}x{k}",
                       "rank": rank, "local_rank": rank, "host": host, "world_size": ranks, "time_us": time_us,
                       "time_us_min": time_us * (1 - noise), "time_us_max": time_us * 1.3, "tflops": tflops,
                       "rel_error": 1e-7, "tolerance": 1e-4, "passed": True}  # fmt: skip
                if uuid:
                    row["uuid"] = f"{uuid}-{rank}"
                rows.append(row)
    return rows


def all_reduce_rows(scale: float = 1.0, *, noise: float = 0.01, sizes=(1024, 1 << 20, 1 << 26),
                    key: str = "kind") -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for nbytes in sizes:
        for in_place in (False, True):
            busbw = 1.0 * scale * (nbytes / (1 << 26)) ** 0.3
            time_us = nbytes / (busbw * 1e9) * 1e6
            rows.append({key: "all_reduce", "op": "all_reduce", "redop": "sum", "dtype": "float32", "bytes": nbytes,
                         "count": nbytes // 4, "in_place": in_place, "time_us": time_us,
                         "time_us_min": time_us * (1 - noise), "time_us_max": time_us * 1.2, "slowest_rank": 1,
                         "algbw_gbps": busbw, "busbw_gbps": busbw, "wrong": 0, "passed": True,
                         "world_size": 2, "group": 0, "group_size": 2})  # fmt: skip
    return rows


def train_rows(steps: int = 20, *, key: str = "kind") -> list[dict[str, Any]]:
    rows = [{key: "train", "step": s, "loss": 10.0 / s, "lr": 1e-3, "grad_norm": 1.0, "step_time_s": 0.5,
             "tokens_per_s": 2048.0, "tokens_per_s_per_device": 1024.0, "tflops_per_device": 0.01, "mfu": None,
             "hfu": None, "peak_memory_bytes": 1 << 20, "world_size": 2, "warmup": s <= 2, "passed": True}
            for s in range(1, steps + 1)]  # fmt: skip
    rows.append({key: "train_summary", "steps_measured": steps - 2, "enough_steps": True, "step_time_s": 0.5,
                 "tokens_per_s": 2048.0, "tokens_per_s_per_device": 1024.0, "tflops_per_device": 0.01,
                 "mfu": None, "hfu": None, "final_loss": 0.5, "peak_memory_bytes": 1 << 20, "world_size": 2,
                 "passed": True})  # fmt: skip
    return rows


def manifest(run_id: str, *, task: str = "bench", status: str = "ok", started: datetime = T0, schema: int = 3,
             hosts=("vm",), device: str = "AMD EPYC", world_size: int = 2, config: dict | None = None,
             rows: int = 0, files=(), sweep_id: str | None = None, uuids: list[str] | None = None,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    devices = [{"rank": r, "local_rank": r, "host": hosts[r % len(hosts)], "type": "cuda" if uuids else "cpu",
                "name": device, **({"uuid": uuids[r]} if uuids else {})} for r in range(world_size)]  # fmt: skip
    data = {"schema_version": schema, "run_id": run_id, "task": task, "status": status, "started_at": iso(started),
            "finished_at": None if status == "running" else iso(started + timedelta(seconds=30)),
            "config": config or {"bench": {"names": ["gemm"], "iters": 5, "dtype": "float32"}},
            "git_sha": "0" * 40, "git_dirty": False, "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"},
            "launcher": "local", "world_size": world_size, "hosts": list(hosts), "devices": devices, "env": {},
            "rows": rows, "failed_rows": 0, "notes": [], "summary": {}, "files": list(files),
            "error": None}  # fmt: skip
    if schema >= 3:
        data.update(exit_code=0 if status == "ok" else 1, reason="ok" if status == "ok" else "failed",
                    sweep_id=sweep_id, heartbeat_at=iso(started + timedelta(seconds=30)))  # fmt: skip
    data.update(extra)
    return data


def new_id(task: str = "bench", started: datetime = T0) -> str:
    return f"{started.strftime('%Y%m%dT%H%M%SZ')}-{task}-{secrets.token_hex(3)}"


def write_run(results_dir: Path, rows: list[dict[str, Any]], *, task: str = "bench", started: datetime = T0,
              files: dict[str, bytes] | None = None, run_id: str | None = None, **fields: Any) -> Path:  # fmt: skip
    """A run directory written by hand (as a writer of that schema version would)."""
    run_id = run_id or new_id(task, started)
    path = results_dir / run_id
    path.mkdir(parents=True)
    for name, data in (files or {}).items():
        (path / name).write_bytes(data)
    for row in rows:
        row.setdefault("run_id", run_id)
    text = json.dumps(manifest(run_id, task=task, started=started, rows=len(rows), files=sorted(files or {}), **fields))
    (path / "manifest.json").write_text(text)
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def record_run(results_dir: Path, rows: list[dict[str, Any]], *, task: str = "bench", status: str = "ok",
               files: dict[str, bytes] | None = None) -> Path:  # fmt: skip
    """A run directory written by the real writer (rows keyed as it validates them)."""
    record = RunRecord.create(results_dir, task=task, config={"bench": {"names": ["gemm"]}}, launcher="local",
                              world_size=2)  # fmt: skip
    record.update(devices=[{"rank": r, "local_rank": r, "host": "vm", "type": "cpu", "name": "AMD EPYC"}
                           for r in range(2)])  # fmt: skip
    record.add_rows([{WRITER_KIND: r.get("kind", r.get("bench")), **{k: v for k, v in r.items() if k != "kind"}}
                     for r in rows])  # fmt: skip
    for name, data in (files or {}).items():
        record.add_file(name, data)
    record.finish(status)
    return record.path


def copy_v1(results_dir: Path, run_id: str = "20261128T031045Z-bench-7f1604") -> Path:
    """The real schema v1 run of tests/data, under `run_id`."""
    path = results_dir / run_id
    shutil.copytree(V1_RUN, path)
    for name in ("manifest.json", "rows.jsonl"):
        file = path / name
        file.write_text(file.read_text().replace("20261128T031045Z-bench-7f1604", run_id))
    return path


def test_synthetic_rows_follow_the_row_schema() -> None:
    """The builders write rows the real schema accepts (as the writer's current version keys them)."""
    for row in [*gemm_rows(key=WRITER_KIND), *all_reduce_rows(key=WRITER_KIND), *train_rows(key=WRITER_KIND)]:
        validate_row({"run_id": "x", **row})


def test_synthetic_v2_manifest_follows_the_manifest_schema() -> None:
    validate_manifest(manifest(new_id(), schema=2))
