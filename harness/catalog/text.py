"""Plain-text tables and figures for the `harness results` commands (the CLI may print them with rich)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as a table shows it: floats to 4 significant digits, None as '-', lists as JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned with two spaces between them; numbers right-aligned."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in texts)])


def size_label(nbytes: float) -> str:
    """Binary sizes as nccl-tests users read them: 1K, 64M, 1G (exact multiples only), else bytes."""
    n = int(nbytes)
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def subject_text(subject: Sequence[tuple[str, Any]]) -> str:
    """An identity as 'op=all_reduce dtype=float32 bytes=64M'; sizes in binary units, absent fields left out."""
    parts = []
    for key, value in subject:
        if value is None:
            continue
        parts.append(f"{key}={size_label(value) if key == 'bytes' and isinstance(value, int) else cell(value)}")
    return " ".join(parts)
