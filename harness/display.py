"""What people read: one progress line per measured case, and a table per benchmark at the end.
Only rank 0 prints."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """A column of a printed table: row key, header, format."""

    key: str
    header: str
    fmt: str = "{}"


class Tabled(Protocol):
    """What a table of rows needs to know about where they came from (a benchmark plug-in)."""

    name: str
    description: str
    columns: tuple[Column, ...]


class _Tee:
    """A text stream that writes to the process's stdout or stderr (whatever it is at the time)
    and to a run's console.log alike."""

    def __init__(self, name: str, log: Any) -> None:
        self.name, self.log = name, log

    @property
    def stream(self) -> Any:
        return getattr(sys, self.name)

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


# Logs (a batch job's output file) are not terminals: give tables room instead of rich's 80 columns.
# Markup is opt-in (markup=True where a line styles itself): text from outside (an error from a
# rank, a path, a headline) holds brackets, and "[/__w/.../pair.cc:553]" read as a closing tag
# made the report of a failed job crash (rich.errors.MarkupError). Emoji codes (":fire:") in
# such text stay as written too.
console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False,
                  width=None if sys.stdout.isatty() else 160)  # fmt: skip
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def log_to(log: Any | None) -> None:
    """Copy everything the consoles print into `log` (a run's console.log), or stop (None)."""
    # None: rich writes to sys.stdout/sys.stderr as they are at each print.
    console.file = _Tee("stdout", log) if log is not None else None  # type: ignore[assignment]
    err_console.file = _Tee("stderr", log) if log is not None else None  # type: ignore[assignment]


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


def progress(done: int, total: int, bench: Tabled, rows: list[dict[str, Any]]) -> None:
    """'[ 3/22] all_reduce  float32  4,096 ...' for a case; ranks summarised when there are many."""
    width = len(str(total))
    prefix = f"[{done:>{width}}/{total}] {bench.name:<10}"
    flag = Text("" if all(r["passed"] for r in rows) else "  WRONG", style="bold red")
    if len(rows) <= 4:
        for row in rows:
            cells = "  ".join(f"{c.header} {_cell(c, row)}" for c in bench.columns if row.get(c.key) is not None)
            console.print(Text(f"{prefix} {cells}") + flag)
        return
    first = next(c for c in bench.columns if c.key in ("tflops", "busbw_gbps", "gbps", "gflops"))
    values = [r[first.key] for r in rows if r.get(first.key) is not None]
    label = "  ".join(_cell(c, rows[0]) for c in bench.columns if c.key in ("dtype", "shape", "bytes"))
    line = (f"{prefix} {label}  {first.header}: median {statistics.median(values):.3f}, "
            f"min {min(values):.3f}, max {max(values):.3f} over {len(rows)} ranks")  # fmt: skip
    console.print(Text(line) + flag)


class Progress:
    """A live progress bar on a terminal (lines scroll above it); plain lines in a log file."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self._bar: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and console.is_terminal:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task("measuring", total=self.total)
        return self

    def advance(self, done: int, total: int, bench: Tabled, rows: list[dict[str, Any]]) -> None:
        """A line per case in a log (each row printed once: no table follows); on a terminal the
        bar moves and the table at the end shows the rows."""
        if not self.enabled:
            return
        if self._bar is None:
            progress(done, total, bench, rows)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=bench.name)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def note(message: str) -> None:
    """A remark about the plan (a rounded size, a skipped dtype)."""
    console.print(f"[yellow]note:[/] {escape(message)}", markup=True)


def summaries(by_bench: dict[str, dict[str, Any]]) -> None:
    """One line per benchmark with its headline figures."""
    for name, summary in by_bench.items():
        if not summary:
            continue
        if name == "gemm":
            parts = []
            for dtype, s in summary.items():
                eff = f" ({s['best_efficiency']:.0%} of {s['peak_tflops']:g})" if s.get("best_efficiency") else ""
                parts.append(f"{dtype} best {s['best_tflops']:.3f} TFLOP/s at {s['best_shape']}{eff}, "
                             f"median {s['median_tflops']:.3f}, geomean {s['geomean_tflops']:.3f}")  # fmt: skip
            text = "; ".join(parts)
        else:
            text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
        console.print(f"[bold]{escape(name)}[/]: {escape(text)}", markup=True)


def tables(rows_by_bench: Mapping[str, list[dict[str, Any]]], benches: Mapping[str, Tabled]) -> None:
    """One table per benchmark with every row, on a terminal (a log got each row as a progress
    line already)."""
    if not console.is_terminal:
        return
    for name, rows in rows_by_bench.items():
        bench = benches[name]
        # Columns no row fills (redop of a broadcast, efficiency without a known peak) are left out.
        columns = [c for c in bench.columns if any(r.get(c.key) is not None for r in rows)]
        table = Table(title=f"{name}: {bench.description}", title_justify="left")
        for column in columns:
            table.add_column(column.header, justify="left" if column.key in ("dtype", "shape") else "right")
        table.add_column("check")
        for row in rows:
            table.add_row(*(_cell(c, row) for c in columns), "ok" if row["passed"] else Text("FAIL", style="red"))
        console.print(table)


def error_line(message: str) -> None:
    """The one line bad input gets."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    sys.stderr.flush()
