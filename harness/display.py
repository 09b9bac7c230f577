"""What people read: one progress line per measured case, and a table per benchmark at the end.
Only rank 0 prints."""

from __future__ import annotations

import statistics
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.bench.base import Benchmark, Column

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _cell(column: Column, row: dict[str, Any]) -> str:
    value = row.get(column.key)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return column.fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def progress(done: int, total: int, bench: Benchmark, rows: list[dict[str, Any]]) -> None:
    """'[ 3/22] all_reduce  float32  4,096 ...' for a case; ranks summarised when there are many."""
    width = len(str(total))
    prefix = f"[{done:>{width}}/{total}] {bench.name:<10}"
    flag = "" if all(r["passed"] for r in rows) else "  [bold red]WRONG[/]"
    if len(rows) <= 4:
        for row in rows:
            cells = "  ".join(f"{c.header} {_cell(c, row)}" for c in bench.columns)
            console.print(f"{prefix} {cells}{flag}")
        return
    first = next(c for c in bench.columns if c.key in ("tflops", "busbw_gbps", "gbps"))
    values = [r[first.key] for r in rows if r.get(first.key) is not None]
    label = "  ".join(_cell(c, rows[0]) for c in bench.columns if c.key in ("dtype", "shape", "bytes"))
    console.print(
        f"{prefix} {label}  {first.header}: median {statistics.median(values):.3f}, "
        f"min {min(values):.3f}, max {max(values):.3f} over {len(rows)} ranks{flag}"
    )


def tables(rows_by_bench: dict[str, list[dict[str, Any]]], benches: dict[str, Benchmark]) -> None:
    """One table per benchmark with every row."""
    for name, rows in rows_by_bench.items():
        bench = benches[name]
        table = Table(title=f"{name}: {bench.description}", title_justify="left")
        for column in bench.columns:
            table.add_column(column.header, justify="left" if column.key in ("dtype", "shape") else "right")
        table.add_column("check")
        for row in rows:
            table.add_row(*(_cell(c, row) for c in bench.columns), "ok" if row["passed"] else "[red]FAIL[/]")
        console.print(table)


def error_line(message: str) -> None:
    """The one line bad input gets."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True)
    sys.stderr.flush()
