"""Pieces of the `--help` texts the tasks share: a table of keys with defaults and docs."""

from __future__ import annotations


def keys_table(rows: list[tuple[str, str, str]]) -> str:
    """'  key=default   doc' lines, aligned."""
    width = max(len(f"{k}={d}") for k, d, _ in rows) + 2
    return "\n".join(f"  {f'{k}={d}':<{width}} {doc}" for k, d, doc in rows)
