"""What a row is: its kind, the fields that name what it measured (its identity) and the
figures it carries with their direction. Plug-ins and tasks declare these next to the figures
they declare for acceptance; `harness results compare` and `regress` match rows by identity and
judge each metric by its direction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    """A figure of a row, e.g. busbw_gbps in GB/s, higher is better."""

    name: str
    """The row key."""
    unit: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class RowKind:
    """A kind of row: its identity fields and its metrics."""

    kind: str
    identity: tuple[str, ...]
    """Row keys that say what was measured (op, dtype, bytes, ...): rows of two runs with equal
    values here measured the same thing."""
    metrics: tuple[Metric, ...]
    headline: str | None = None
    """The metric a listing shows for this kind (None: the first metric)."""

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)


def row_kind(row: Mapping[str, Any]) -> str | None:
    """The kind of a row: `kind` (schema v3) or `bench` (schema v1 and v2)."""
    kind = row.get("kind", row.get("bench"))
    return str(kind) if kind is not None else None
