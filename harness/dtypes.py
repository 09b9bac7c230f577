"""Data type names: the canonical ones, the spellings users type, element sizes, and the torch
dtype behind each (torch imported only when that is asked for, so the command line stays light).

Spellings follow torch's meanings: `half` is float16 and `float` is float32 (as `torch.half`
and `torch.float`), `double` float64; `fp8` is float8, the e4m3 format the gemm benchmark runs.
Runs record the canonical name whatever was typed.
"""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError, did_you_mean

SIZES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "tf32": 4,
    "bfloat16": 2,
    "float16": 2,
    "float8": 1,
    "int32": 4,
    "int64": 8,
}
"""Canonical names and bytes per element. tf32 is float32 storage with TF32 tensor-core math;
float8 is e4m3 (torch.float8_e4m3fn)."""

ALIASES: dict[str, str] = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float": "float32",
    "fp64": "float64",
    "double": "float64",
    "fp8": "float8",
    "float8_e4m3fn": "float8",
    "e4m3": "float8",
}
"""Spellings accepted wherever a dtype is, and the canonical name each stands for."""

ALIAS_HELP = "bf16=bfloat16, fp16/half=float16, fp32/float=float32, fp64/double=float64, fp8=float8 (e4m3)"

_TORCH_NAMES = {"tf32": "float32", "float8": "float8_e4m3fn"}


def canonical(name: Any, *, key: str = "dtype", choices: tuple[str, ...] | list[str] | None = None) -> str:
    """The canonical name of a dtype spelling; ConfigError naming `key`, the valid choices and
    the closest one for anything else (or for a dtype outside `choices`)."""
    allowed = tuple(choices) if choices is not None else tuple(SIZES)
    text = str(name).strip()
    found = ALIASES.get(text.lower(), text.lower() if text.lower() in SIZES else None)
    if found is None or found not in allowed:
        # A canonical name is the better suggestion; an alias only when no name is close.
        hint = did_you_mean(text, allowed) or did_you_mean(text, [a for a, c in ALIASES.items() if c in allowed])
        raise ConfigError(f"{key}: unknown dtype {name!r}{hint}; choices: {', '.join(allowed)} ({ALIAS_HELP})")
    return found


def itemsize(name: str) -> int:
    """Bytes per element of a canonical dtype name."""
    return SIZES[name]


def torch_dtype(name: str) -> Any:
    """The torch dtype that stores a canonical dtype name (tf32: float32, float8: float8_e4m3fn)."""
    import torch  # heavy: imported only when a tensor is about to be made

    return getattr(torch, _TORCH_NAMES.get(name, name))


def is_floating(name: str) -> bool:
    return not name.startswith("int")
