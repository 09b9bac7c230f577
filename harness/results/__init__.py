"""Run records: run directories, manifests, rows, schemas, atomic writes, and reading runs back.
Nothing else writes under a results directory, and every read of a run goes through here."""

from harness.results.kinds import Metric, RowKind, row_kind
from harness.results.provenance import REDACTED, redact
from harness.results.read import DamagedRun, RunSummary, read_manifest, read_rows, read_run
from harness.results.run import RecordError, RunRecord, close_if_unfinished, new_run_id, write_sweep_summary
from harness.results.schema import SCHEMA_VERSION, validate_manifest, validate_row

__all__ = [
    "REDACTED",
    "RecordError",
    "SCHEMA_VERSION",
    "DamagedRun",
    "Metric",
    "RowKind",
    "RunRecord",
    "RunSummary",
    "close_if_unfinished",
    "new_run_id",
    "read_manifest",
    "read_rows",
    "read_run",
    "redact",
    "row_kind",
    "validate_manifest",
    "validate_row",
    "write_sweep_summary",
]
