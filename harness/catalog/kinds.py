"""Every row kind the harness writes, with its identity and metrics: the benchmark plug-ins'
declarations, training's and the projection's (importing the plug-ins imports torch: only the
commands that match rows by identity load this)."""

from __future__ import annotations

from harness.bench.registry import row_kinds
from harness.perf.kinds import KINDS as PROJECT_KINDS
from harness.results.kinds import RowKind
from harness.train.kinds import KINDS as TRAIN_KINDS


def all_kinds() -> dict[str, RowKind]:
    """Row kinds by name."""
    return {**row_kinds(), **{k.kind: k for k in (*TRAIN_KINDS, *PROJECT_KINDS)}}
