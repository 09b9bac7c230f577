"""memory: STREAM's four kernels on each rank's device, over arrays far larger than the
last-level cache. GB/s counts bytes read plus written (STREAM's convention): copy and scale move
2 arrays per element, add and triad 3. Each kernel is idempotent on its own arrays, so every
element is checked against its exact expected value after the timed loop too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.bench.base import Benchmark, BenchSpec, Case, Column, PlanEnv
from harness.devices import DTYPES
from harness.dist import Comm, DistContext
from harness.errors import ConfigError

SCALAR = 3.0
# kernel: (arrays moved per element, expected result from a=1, b=2, c=4)
KERNELS = {"copy": (2, 1.0), "scale": (2, SCALAR * 4.0), "add": (3, 3.0), "triad": (3, 2.0 + SCALAR * 4.0)}
GPU_ARRAY_BYTES = 2**30  # 1 GiB: 20x the 50 MB L2 of an H100


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
    )

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float64", "float32")

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float64",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[dict]:
        array_bytes = spec.array_bytes or default_array_bytes(env.device_type)
        env.require(4 * array_bytes, f"bench.array_bytes={array_bytes}: four arrays (a, b, c, out)")
        cases = []
        for dtype in dtypes:
            count = array_bytes // DTYPES[dtype][1]
            if count < 1:
                raise ConfigError(f"bench.array_bytes={array_bytes} is smaller than one {dtype} element")
            for kernel, (arrays, _) in KERNELS.items():
                size = DTYPES[dtype][1]
                cases.append({"kernel": kernel, "dtype": dtype, "array_bytes": count * size,
                              "bytes": arrays * count * size, "count": count})  # fmt: skip
        return cases

    def build(self, case: dict, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Case:
        dtype, count, kernel = DTYPES[case["dtype"]][0], case["count"], case["kernel"]
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

        def figures(seconds: float) -> dict:
            return {"gbps": case["bytes"] / seconds / 1e9}

        return Case(dict(case), runs[kernel], verify, out, figures)

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kernel in KERNELS:
            values = [r["gbps"] for r in rows if r["kernel"] == kernel and r.get("gbps")]
            if values:
                out[f"{kernel}_gbps_min_rank"] = min(values)
                out[f"{kernel}_gbps_max_rank"] = max(values)
        return out


BENCHMARK = Memory()
