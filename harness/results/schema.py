"""The versioned JSON Schemas of manifests and rows, and validation against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_VERSION = 2
SCHEMA_DIR = Path(__file__).parent / "schema"
# Older versions stay in schema/v<N>/; the current schema accepts their records unchanged.


@cache
def _validator(name: str, version: int = SCHEMA_VERSION) -> jsonschema.protocols.Validator:
    folder = SCHEMA_DIR if version == SCHEMA_VERSION else SCHEMA_DIR / f"v{version}"
    schema = json.loads((folder / f"{name}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_manifest(manifest: dict[str, Any], version: int = SCHEMA_VERSION) -> None:
    """Raise jsonschema.ValidationError when `manifest` does not follow the manifest schema
    (the current one, or an older `version`)."""
    _validator("manifest", version).validate(manifest)


def validate_row(row: dict[str, Any], version: int = SCHEMA_VERSION) -> None:
    """Raise jsonschema.ValidationError when `row` does not follow the row schema."""
    _validator("row", version).validate(row)
