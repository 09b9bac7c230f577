"""Cost of recording one training step's row as a run grows: `RunRecord.add_rows` (one appended
line) against the rewrite of the whole rows.jsonl that it replaced (the old way: every row
serialised again, written to a temporary file, fsynced and renamed over the old one).

For each run length N, a record is filled with N train rows, then the time of recording one more
row is measured both ways (median over trials, the two ways alternating). Both ways are checked
before their time counts: the file must read back as N + 1 rows, the last one the new row.

    python benchmarks/record_rows.py                        # N = 1,000 / 10,000 / 100,000
    python benchmarks/record_rows.py --sizes 1000,50000 --trials 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness.results import RunRecord
from harness.results.atomic import write_jsonl_atomic

ROW = {"kind": "train", "step": 1, "loss": 5.1234, "lr": 3e-4, "grad_norm": 1.25, "step_time_s": 0.25,
       "tokens_per_s": 4096.0, "tokens_per_s_per_device": 2048.0, "tflops_per_device": 0.01, "mfu": None,
       "hfu": None, "peak_memory_bytes": 1 << 30, "world_size": 2, "dp_replicate": 1, "dp_shard": 2, "tp": 1,
       "pp": 1, "cp": 1, "warmup": False, "passed": True}  # fmt: skip


def filled(folder: Path, n: int) -> tuple[RunRecord, list[dict]]:
    """A record holding N train rows, and those rows as the old writer kept them in memory."""
    record = RunRecord.create(folder, task="train", config={}, launcher="local", world_size=2)
    rows = [{**ROW, "step": i} for i in range(1, n + 1)]
    record.add_rows(rows)
    return record, [{"run_id": record.run_id, **row} for row in rows]


def rewrite(record: RunRecord, kept: list[dict], row: dict) -> None:
    """The old add_rows: append in memory, rewrite the file atomically (its manifest rewrite left out)."""
    kept.append({"run_id": record.run_id, **row})
    write_jsonl_atomic(record.path / "rows.jsonl", kept)


def check(record: RunRecord, n: int) -> None:
    lines = (record.path / "rows.jsonl").read_text().splitlines()
    assert len(lines) == n + 1 and json.loads(lines[-1])["step"] == n + 1, "rows.jsonl did not read back"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="rows already in the run")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    print(f"one more train row in a run of N rows: ms per row (median of {args.trials} trials)")
    print(f"| {'N':>9} | {'append ms':>10} | {'rewrite ms':>11} | {'rewrite / append':>16} |")
    print(f"|{'-' * 10}:|{'-' * 11}:|{'-' * 12}:|{'-' * 17}:|")
    for n in (int(s) for s in args.sizes.split(",")):
        times: dict[str, list[float]] = {"append": [], "rewrite": []}
        for _ in range(args.trials):
            for way in times:  # alternate: the page cache and the disk's state hit both alike
                with tempfile.TemporaryDirectory() as tmp:
                    record, kept = filled(Path(tmp), n)
                    row = {**ROW, "step": n + 1}
                    start = time.perf_counter()
                    record.add_rows([row]) if way == "append" else rewrite(record, kept, row)
                    elapsed = time.perf_counter() - start
                    check(record, n)
                    times[way].append(elapsed)
        append, old = (statistics.median(times[w]) * 1e3 for w in ("append", "rewrite"))
        print(f"| {n:>9,} | {append:>10.3f} | {old:>11.1f} | {old / append:>15,.0f}x |")


if __name__ == "__main__":
    main()
