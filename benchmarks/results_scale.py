"""How `harness results` scales with the number of runs: listing, filtering and querying N run directories.

Generates N synthetic run directories (each a v3 manifest and `--rows-per-run` rows, half gemm, half
all_reduce, as the writer lays them out) in a temporary directory, then times, as medians over trials:

- list, cold index: `iter_runs` with no `.index.json` (every manifest and every row read and checked);
- list, warm index: `iter_runs` again (one stat per file, the index read);
- filter, warm: a host + config key + date range filter over the warm listing;
- query `runs`: `SELECT count(*) ... GROUP BY status` through DuckDB (every manifest read in place);
- query `rows`: the median bf16 gemm TFLOP/s per host over the last 30 days (every rows.jsonl read).

The files were just written, so the page cache is warm throughout: "cold" is about the index only.
The script waits 2.5 s after generating: the index reads again any run changed within 2 s of its
scan (a change inside a coarse file-system clock tick could otherwise go unseen).

    python benchmarks/results_scale.py                          # N = 100, 1000, 10000 at 100 rows per run
    python benchmarks/results_scale.py --runs 100 1000 --trials 3
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from harness.catalog import RunFilter, list_runs, query
from harness.results.kinds import Metric, RowKind
from harness.results.read import INDEX, iter_runs

KINDS = {
    "gemm": RowKind("gemm", ("dtype", "m", "n", "k", "rank"), (Metric("tflops", "TFLOP/s"),)),
    "all_reduce": RowKind("all_reduce", ("op", "dtype", "bytes", "in_place", "redop", "world_size", "group"),
                          (Metric("busbw_gbps", "GB/s"), Metric("time_us", "us", higher_is_better=False))),
}  # fmt: skip
HOSTS = 64
QUERY = """SELECT r.host, median(r.tflops) AS tflops, count(*) AS n FROM rows r JOIN runs USING (run_id)
WHERE r.kind = 'gemm' AND r.dtype = 'bfloat16' AND runs.started_at >= now() - INTERVAL 30 DAY GROUP BY r.host"""


def _rows(run_id: str, host: str, n: int) -> str:
    out = []
    for i in range(n):
        if i % 2 == 0:
            m = 256 << (i // 2 % 4)
            row = {"run_id": run_id, "kind": "gemm", "dtype": "bfloat16" if i % 4 == 0 else "float32", "m": m, "n": m,
                   "k": m, "shape": f"{m}x{m}x{m}", "rank": i // 8 % 8, "local_rank": i // 8 % 8, "host": host,
                   "world_size": 8, "time_us": 101.5 + i, "time_us_min": 99.25 + i, "time_us_max": 140.0 + i,
                   "tflops": 600.0 + (i % 13), "rel_error": 1.2e-3, "tolerance": 0.02, "passed": True}  # fmt: skip
        else:
            nbytes = 1024 << (i // 2 % 20)
            row = {"run_id": run_id, "kind": "all_reduce", "op": "all_reduce", "redop": "sum", "dtype": "float32",
                   "bytes": nbytes, "count": nbytes // 4, "in_place": i % 4 == 1, "time_us": 20.0 + i,
                   "time_us_min": 19.0 + i, "time_us_max": 25.0 + i, "slowest_rank": 3, "algbw_gbps": 100.0 + i,
                   "busbw_gbps": 175.0 + i, "wrong": 0, "passed": True, "world_size": 8, "group": 0,
                   "group_size": 8}  # fmt: skip
        out.append(json.dumps(row))
    return "\n".join(out) + "\n"


def generate(root: Path, count: int, rows_per_run: int, start: int = 0) -> None:
    """Runs start..count-1 under root (earlier ones are kept), spread over the last 60 days."""
    now = datetime.now(timezone.utc)
    for i in range(start, count):
        started = now - timedelta(minutes=60 * 24 * 60 * (count - i) / count)
        run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-bench-{secrets.token_hex(3)}"
        host = f"node{i % HOSTS:03d}"
        path = root / run_id
        path.mkdir()
        manifest = {
            "schema_version": 3, "run_id": run_id, "task": "bench", "status": "ok" if i % 50 else "failed",
            "started_at": started.isoformat(), "finished_at": (started + timedelta(seconds=60)).isoformat(),
            "config": {"bench": {"names": ["gemm", "all_reduce"], "dtype": "bfloat16" if i % 3 else "float32",
                                 "iters": 20, "warmup": 5}, "launch": {"nproc": 8}, "seed": i},
            "git_sha": "0" * 40, "git_dirty": False, "versions": {"python": "3.11.7", "torch": "2.9.0"},
            "launcher": "slurm", "world_size": 8, "hosts": [host],
            "devices": [{"rank": r, "local_rank": r, "host": host, "type": "cuda", "name": "NVIDIA H100 80GB HBM3",
                         "uuid": f"GPU-{i:05d}-{r}"} for r in range(8)],
            "env": {}, "rows": rows_per_run, "failed_rows": 0, "notes": [], "files": [], "error": None,
            "summary": {"gemm": {"bfloat16": {"best_tflops": 612.0}}}, "exit_code": 0, "reason": "ok",
            "sweep_id": None, "heartbeat_at": started.isoformat(),
        }  # fmt: skip
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (path / "rows.jsonl").write_text(_rows(run_id, host, rows_per_run))


def median_time(fn: Callable[[], object], trials: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(trials):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(root: Path, trials: int) -> dict[str, float]:
    def drop_index() -> None:
        (root / INDEX).unlink(missing_ok=True)

    since = (datetime.now(timezone.utc) - timedelta(days=30)).date().isoformat()
    flt = RunFilter.parse(host="node007", config=["bench.dtype=bfloat16"], since=since)
    cold = median_time(lambda: list(iter_runs(root, kinds=KINDS)), max(1, trials // 2), drop_index)
    list(iter_runs(root, kinds=KINDS))
    found = list_runs(root, flt, kinds=KINDS)
    result = query(QUERY, root)
    assert result.rows, "the query found nothing"
    return {
        "list_cold_s": cold,
        "list_warm_s": median_time(lambda: list(iter_runs(root, kinds=KINDS)), trials),
        "filter_warm_s": median_time(lambda: list_runs(root, flt, kinds=KINDS), trials),
        "filtered": len(found),
        "query_runs_s": median_time(lambda: query("SELECT status, count(*) FROM runs GROUP BY status", root), trials),
        "query_rows_s": median_time(lambda: query(QUERY, root), trials),
        "index_mb": (root / INDEX).stat().st_size / 1e6,
        "data_mb": sum(f.stat().st_size for d in os.scandir(root) if d.is_dir() for f in os.scandir(d.path)) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rows-per-run", type=int, default=100)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to generate (default: a temporary dir)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="results-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"runs under {root}; {args.rows_per_run} rows per run; medians of {args.trials} trials "
          f"(cold listing: {max(1, args.trials // 2)})")  # fmt: skip
    header = ("runs", "rows", "data MB", "index MB", "list cold s", "list warm s", "filter s", "query runs s",
              "query rows s")  # fmt: skip
    print(" | ".join(header))
    made = 0
    try:
        for count in sorted(args.runs):
            t0 = time.perf_counter()
            generate(root, count, args.rows_per_run, start=made)
            made = count
            gen = time.perf_counter() - t0
            time.sleep(2.5)  # a run changed under 2 s before its scan is read again at the next listing
            m = measure(root, args.trials)
            print(f"{count} | {count * args.rows_per_run:,} | {m['data_mb']:.0f} | {m['index_mb']:.1f} | "
                  f"{m['list_cold_s']:.2f} | {m['list_warm_s']:.3f} | {m['filter_warm_s']:.3f} "
                  f"({m['filtered']} runs) | {m['query_runs_s']:.2f} | {m['query_rows_s']:.2f}   "
                  f"[generated in {gen:.0f} s]", flush=True)  # fmt: skip
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
