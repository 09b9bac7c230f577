"""JSON for frozen dataclasses: a task's plan travels to the ranks inside config.json.

The encoding is self-describing, so nothing has to know the plan's type in advance: a dataclass
is {"__type__": "module:QualName", field: value, ...} and a tuple {"__tuple__": [...]} (JSON has
only lists). Decoding imports the named module, which must be part of the harness, and builds
the dataclass through its constructor. Plain values, lists and string-keyed dicts pass through.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

_TYPE, _TUPLE = "__type__", "__tuple__"
_PACKAGES = ("harness.",)


def encode(value: Any) -> Any:
    """A JSON-ready form of `value` (dataclasses, tuples, lists, dicts with str keys, plain values)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return {_TYPE: f"{cls.__module__}:{cls.__qualname__}", **fields}
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"cannot encode a dict key of type {type(key).__name__}: {key!r}")
        return {k: encode(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} in a job file")


def _class(path: str) -> type:
    module, _, name = path.partition(":")
    if not module.startswith(_PACKAGES):
        raise ValueError(f"refusing to decode a {path!r}: only harness types travel in a job file")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"{path!r} is not a dataclass")
    return obj


def decode(data: Any) -> Any:
    """The value `encode` made (raises ValueError for a type outside the harness)."""
    if isinstance(data, dict):
        if _TYPE in data:
            cls = _class(data[_TYPE])
            return cls(**{k: decode(v) for k, v in data.items() if k != _TYPE})
        if _TUPLE in data and len(data) == 1:
            return tuple(decode(v) for v in data[_TUPLE])
        return {k: decode(v) for k, v in data.items()}
    if isinstance(data, list):
        return [decode(v) for v in data]
    return data
