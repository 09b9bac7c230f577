"""The versioned JSON Schemas of manifests and rows, and validation against them.

The current version is 3; versions 1 and 2 stay in schema/v<N>/, and a record is validated
against the version it was written in (a manifest says its `schema_version`; a row that names
its kind `bench` rather than `kind` is from version 1 or 2), so old runs still read back.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_VERSION = 3
SCHEMA_DIR = Path(__file__).parent / "schema"


@cache
def _validator(name: str, version: int = SCHEMA_VERSION) -> jsonschema.protocols.Validator:
    folder = SCHEMA_DIR if version == SCHEMA_VERSION else SCHEMA_DIR / f"v{version}"
    schema = json.loads((folder / f"{name}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_manifest(manifest: dict[str, Any], version: int | None = None) -> None:
    """Raise jsonschema.ValidationError when `manifest` does not follow the manifest schema of
    `version` (default: the version it says it was written in)."""
    if version is None:
        written = manifest.get("schema_version")
        version = written if written in (1, 2, SCHEMA_VERSION) else SCHEMA_VERSION
    _validator("manifest", version).validate(manifest)


def validate_row(row: dict[str, Any], version: int | None = None) -> None:
    """Raise jsonschema.ValidationError when `row` does not follow the row schema of `version`
    (default: 3 for a row with `kind`, 2 for an older row with `bench`)."""
    if version is None:
        version = 2 if "bench" in row and "kind" not in row else SCHEMA_VERSION
    _validator("row", version).validate(row)
