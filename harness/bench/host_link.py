"""host_link: host-to-device and device-to-host copies, pinned and pageable host memory, GB/s.
On a machine without an accelerator there is no link: the benchmark says so and measures nothing."""

from __future__ import annotations

from typing import Any

import torch

from harness.bench.base import Benchmark, BenchSpec, Case, Column, PlanEnv
from harness.dist import Comm, DistContext
from harness.errors import ConfigError

DIRECTIONS = ("h2d", "d2h")


class HostLink(Benchmark):
    name = "host_link"
    description = "host<->device copies (pinned and pageable): GB/s per direction, checked"
    collective = False
    keys = ("max_bytes", "warmup", "iters")
    columns = (
        Column("rank", "rank"),
        Column("direction", "direction"),
        Column("pinned", "pinned"),
        Column("bytes", "bytes", "{:,}"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("gbps", "GB/s", "{:.2f}"),
    )

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float32",)

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float32",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[dict]:
        if env.device_type != "cuda":
            env.note("host_link: not applicable on cpu (no device memory, no host link); skipped")
            return []
        nbytes = spec.max_bytes // 4 * 4
        if nbytes < 4:
            raise ConfigError("bench.max_bytes is smaller than one float32 element")
        return [{"direction": d, "pinned": p, "bytes": nbytes} for d in DIRECTIONS for p in (True, False)]

    def build(self, case: dict, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Case:
        count = case["bytes"] // 4
        host = torch.arange(count, dtype=torch.float32) % 1024
        if case["pinned"]:
            host = host.pin_memory()
        dev = torch.empty(count, dtype=torch.float32, device=ctx.device)
        if case["direction"] == "h2d":
            run = lambda: dev.copy_(host, non_blocking=case["pinned"])  # noqa: E731
            target, source = dev, host
        else:
            dev.copy_(host)
            host_out = torch.empty(count, dtype=torch.float32, pin_memory=case["pinned"])
            run = lambda: host_out.copy_(dev, non_blocking=case["pinned"])  # noqa: E731
            target, source = host_out, host

        def verify() -> dict[str, Any]:
            torch.cuda.synchronize()
            wrong = int((target.cpu() != source.cpu()).sum())
            return {"wrong": wrong, "passed": wrong == 0}

        return Case(dict(case), run, verify, target, lambda s: {"gbps": case["bytes"] / s / 1e9})


BENCHMARK = HostLink()
