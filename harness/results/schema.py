"""The versioned JSON Schemas of manifests and rows, and validation against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schema"


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `manifest` does not follow the manifest schema."""
    _validator("manifest").validate(manifest)


def validate_row(row: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `row` does not follow the row schema."""
    _validator("row").validate(row)
