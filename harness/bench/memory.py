"""memory: STREAM's four kernels on each rank's device, over arrays far larger than the
last-level cache. GB/s counts bytes read plus written (STREAM's convention): copy and scale move
2 arrays per element, add and triad 3. Each kernel is idempotent on its own arrays, so every
element is checked against its exact expected value after the timed loop too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.bench.base import Benchmark, BenchSpec, CaseSpec, GateFigure, GateValue, PlanEnv, Runnable, Where
from harness.config.schema import BenchConfig
from harness.config.validate import positive_size
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.dtypes import itemsize, torch_dtype
from harness.errors import ConfigError
from harness.results.kinds import Metric

SCALAR = 3.0
# kernel: (arrays moved per element, expected result from a=1, b=2, c=4)
KERNELS = {"copy": (2, 1.0), "scale": (2, SCALAR * 4.0), "add": (3, 3.0), "triad": (3, 2.0 + SCALAR * 4.0)}
GPU_ARRAY_BYTES = 2**30  # 1 GiB: 20x the 50 MB L2 of an H100
TRIAD = GateFigure(
    "memory_triad_gbps", "GB/s", "gpu", datasheet="memory_gbps", title="STREAM triad: memory bandwidth of each GPU"
)


@dataclass(frozen=True)
class MemoryOptions:
    array_bytes: int | None = None
    """Bytes per array; None: the device's default."""


@dataclass(frozen=True)
class MemoryCase(CaseSpec):
    kernel: str
    array_bytes: int
    bytes: int
    """Bytes moved per call (read + written)."""
    count: int


def last_level_cache_bytes() -> int:
    """The largest CPU cache this host reports (sysfs), or 32 MiB when it says nothing."""
    best = 0
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best or 32 * 2**20


def default_array_bytes(device_type: str) -> int:
    return GPU_ARRAY_BYTES if device_type == "cuda" else max(64 * 2**20, 4 * last_level_cache_bytes())


class Memory(Benchmark):
    name = "memory"
    description = "STREAM copy/scale/add/triad on each rank's device: GB/s (read + written), checked"
    collective = False
    keys = ("dtype", "array_bytes", "warmup", "iters")
    columns = (
        Column("rank", "rank"),
        Column("kernel", "kernel"),
        Column("dtype", "dtype"),
        Column("array_bytes", "array (B)", "{:,}"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("gbps", "GB/s", "{:.2f}"),
        Column("gbps_best", "best of N", "{:.2f}"),
    )
    identity = ("kernel", "dtype", "array_bytes", "rank")
    metrics = (Metric("gbps", "GB/s"), Metric("time_us", "us", higher_is_better=False))
    gates = (TRIAD,)
    best_of = ("gbps",)

    def parse_options(self, bench: BenchConfig) -> MemoryOptions:
        return MemoryOptions(positive_size("bench.array_bytes", bench.array_bytes))

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float64", "float32")

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float64",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[MemoryCase]:
        array_bytes = spec.options_of(self).array_bytes or default_array_bytes(env.device_type)
        env.require(4 * array_bytes, f"bench.array_bytes={array_bytes:,} bytes: four arrays (a, b, c, out)")
        cases = []
        for dtype in dtypes:
            size = itemsize(dtype)
            count = array_bytes // size
            if count < 1:
                raise ConfigError(f"bench.array_bytes={array_bytes} is smaller than one {dtype} element")
            for kernel, (arrays, _) in KERNELS.items():
                cases.append(MemoryCase(dtype, kernel, count * size, arrays * count * size, count))
        return cases

    def build(self, case: MemoryCase, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        dtype, count, kernel = torch_dtype(case.dtype), case.count, case.kernel
        a = torch.full((count,), 1.0, dtype=dtype, device=ctx.device)
        b = torch.full((count,), 2.0, dtype=dtype, device=ctx.device)
        c = torch.full((count,), 4.0, dtype=dtype, device=ctx.device)
        out = torch.empty_like(a)
        # The STREAM kernels, written so that no temporary array is allocated in the timed call.
        runs = {
            "copy": lambda: out.copy_(a),
            "scale": lambda: torch.mul(c, SCALAR, out=out),
            "add": lambda: torch.add(a, b, out=out),
            "triad": lambda: torch.add(b, c, alpha=SCALAR, out=out),
        }
        expected = KERNELS[kernel][1]

        def verify() -> dict[str, Any]:
            wrong = int((out != expected).sum())
            return {"wrong": wrong, "passed": wrong == 0}

        return Runnable(runs[kernel], verify, out)

    def figures(self, case: MemoryCase, seconds: float, where: Where) -> dict[str, Any]:
        return {"gbps": case.bytes / seconds / 1e9}

    def gate_values(self, rows: list[dict], scope: str) -> list[GateValue]:
        """Each rank's STREAM triad GB/s."""
        return [GateValue(TRIAD, TRIAD.name, r["gbps"], rank=r["rank"]) for r in rows
                if r.get("kernel") == "triad" and r.get("gbps") is not None]  # fmt: skip

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kernel in KERNELS:
            values = [r["gbps"] for r in rows if r["kernel"] == kernel and r.get("gbps")]
            if values:
                out[f"{kernel}_gbps_min_rank"] = min(values)
                out[f"{kernel}_gbps_max_rank"] = max(values)
        return out


BENCHMARK = Memory()
