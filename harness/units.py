"""Every unit formula of the project, in one place.

Sources: nccl-tests doc/PERFORMANCE.md (algbw, busbw and the byte counts per op), mamf-finder
(2·M·N·K per matmul), HPL (2/3·N³ + 3/2·N²). Bandwidths are in GB/s with GB = 1e9 bytes, as
nccl-tests prints them; sizes given by users use binary multiples (1K = 1024), as nccl-tests' -b/-e.
"""

from __future__ import annotations

import re

# nccl-tests' bus bandwidth factor per op, as a function of the number of ranks n: the fraction
# of the data each rank must move over its slowest link, so busbw compares with link speed.
_BUS_FACTORS = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "sendrecv": lambda n: 1.0,
}

COLLECTIVE_OPS = tuple(_BUS_FACTORS)


def bus_factor(op: str, world_size: int) -> float:
    """nccl-tests' busbw/algbw factor for `op` on `world_size` ranks."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    try:
        return _BUS_FACTORS[op](world_size)
    except KeyError:
        raise ValueError(f"unknown collective {op!r}; known: {', '.join(COLLECTIVE_OPS)}") from None


def algbw_gbps(nbytes: float, seconds: float) -> float:
    """Algorithm bandwidth S / t in GB/s (1e9 bytes)."""
    return nbytes / seconds / 1e9


def busbw_gbps(op: str, nbytes: float, seconds: float, world_size: int) -> float:
    """Bus bandwidth: algbw × the op's factor (nccl-tests PERFORMANCE.md)."""
    return algbw_gbps(nbytes, seconds) * bus_factor(op, world_size)


def gemm_flops(m: int, n: int, k: int) -> int:
    """FLOPs of an (m×k)·(k×n) product: one multiply and one add per inner-product term."""
    return 2 * m * n * k


def tflops(flops: float, seconds: float) -> float:
    """FLOP/s in units of 1e12."""
    return flops / seconds / 1e12


def hpl_flops(n: int) -> float:
    """FLOPs HPL credits for solving Ax = b of order n (LU plus the two triangular solves)."""
    return 2.0 / 3.0 * n**3 + 3.0 / 2.0 * n**2


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(i?B)?\s*$")
_BITS = re.compile(r"^\s*\d+(?:\.\d+)?\s*[kmgtKMGT]?i?b(it)?s?\s*$")
_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(text: str | int) -> int:
    """'64M' -> 67108864. Binary multiples K, M, G, T, written K, KB or KiB alike (1G = 1GB =
    1GiB = 2^30, as nccl-tests' -b/-e); a plain number is bytes.

    Raises ValueError for anything else: bits ('1Gb'), negative numbers, fractions of a byte.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative")
        return text
    match = _SIZE.match(str(text))
    if not match and _BITS.match(str(text)):
        raise ValueError(f"{text!r} is in bits; sizes are bytes: write B or nothing (1G = 1GB = 1GiB = 2^30 bytes)")
    if not match:
        raise ValueError(f"{text!r} is not a size (use bytes with an optional K, M, G or T suffix, e.g. 64M)")
    value = float(match.group(1)) * _MULT[match.group(2).lower()]
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def format_bytes(nbytes: int) -> str:
    """67108864 -> '64M': the shortest exact binary form, as a user would type it."""
    for suffix, mult in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if nbytes >= mult and nbytes % mult == 0:
            return f"{nbytes // mult}{suffix}"
    return str(nbytes)


def human_bytes(nbytes: float) -> str:
    """5872025 -> '5.6 MiB': a size to read (binary units, three significant figures or so)."""
    for suffix, mult in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= mult:
            return f"{nbytes / mult:,.{2 if nbytes < 10 * mult else 1}f} {suffix}"
    return f"{int(nbytes)} B"
