"""Field docstrings of the config dataclasses, read from their source, for `--help`.

The docstrings under each field are the single source of the documentation: `--help` and the
README's key tables come from here rather than from a second copy that could drift.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import sys
import textwrap
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _classes(path: str) -> dict[str, ast.ClassDef]:
    """The top-level classes of a source file, parsed once (inspect.getsource per class costs
    tenths of a second, which `harness --help` must not pay)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: docstring} for a dataclass whose fields carry a string literal underneath."""
    module = sys.modules[cls.__module__]
    found = _classes(module.__file__ or "").get(cls.__name__)
    body = found.body if found else ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls: type, prefix: str = "", values: Mapping[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every leaf field of a dataclass, nested ones flattened.
    `values`: the composed defaults of this section (presets applied), shown instead of the
    schema's (a preset's model.dim rather than ???)."""
    rows: list[tuple[str, str, str]] = []
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        given = values.get(f.name, default) if values is not None else default
        if dataclasses.is_dataclass(default):
            rows.extend(describe(type(default), f"{key}.", given if isinstance(given, Mapping) else None))
        else:
            shown = "null" if given is None else str(given)
            rows.append((key, shown, docs.get(f.name, "")))
    return rows
