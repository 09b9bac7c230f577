"""Run records: run directories, manifests, rows, schemas, atomic writes."""

from harness.results.run import RunRecord, close_if_unfinished, new_run_id
from harness.results.schema import SCHEMA_VERSION, validate_manifest, validate_row

__all__ = ["SCHEMA_VERSION", "RunRecord", "close_if_unfinished", "new_run_id", "validate_manifest", "validate_row"]
