"""The one record every acceptance check produces, health and performance alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("pass", "warn", "fail", "n/a")


@dataclass
class Check:
    """One check on one subject: a GPU (or CPU rank), a node, or the cluster."""

    name: str
    """What was checked, e.g. ecc_uncorrected, gemm_bfloat16_tflops, correctness_gemm."""
    scope: str
    """gpu (a CPU node's rank: rank) | node | cluster."""
    subject: str
    """'n1 gpu0', 'n1' or 'cluster'."""
    status: str
    """pass | warn | fail | n/a (not applicable here; listed, never counted as a pass)."""
    reason: str = ""
    value: Any = None
    threshold: float | None = None
    """The figure the value had to reach, when there is one."""
    peers_median: float | None = None
    host: str | None = None
    rank: int | None = None
    local_index: int | None = None
    uuid: str | None = None
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpu_subject(host: str, local_index: int | None, device_type: str) -> str:
    kind = "gpu" if device_type == "cuda" else "rank"
    return f"{host} {kind}{local_index if local_index is not None else '?'}"


def where(facts: dict[str, Any], rank: int, device_type: str) -> dict[str, Any]:
    """The Check fields that place a GPU (or, on CPU, a rank) from its rank's health facts:
    scope, subject ('n1 gpu3'), host, rank, local_index (the GPU as NVML numbers it, or the
    rank's index on its node) and uuid."""
    host, index = facts.get("host", "?"), facts.get("local_index")
    return {"scope": "gpu" if device_type == "cuda" else "rank", "subject": gpu_subject(host, index, device_type),
            "host": host, "rank": rank, "local_index": index, "uuid": facts.get("uuid")}  # fmt: skip


def verdict(checks: list[Check]) -> str:
    """fail if any check failed, else pass (warnings and n/a do not fail a node)."""
    return "fail" if any(c.status == "fail" for c in checks) else "pass"
