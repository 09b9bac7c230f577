"""host_link: host-to-device and device-to-host copies, pinned and pageable host memory, GB/s.
On a machine without an accelerator there is no link: the benchmark says so and measures nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.bench.base import Benchmark, BenchSpec, CaseSpec, PlanEnv, Runnable, Where
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.errors import ConfigError
from harness.results.kinds import Metric

DIRECTIONS = ("h2d", "d2h")


@dataclass(frozen=True)
class LinkCase(CaseSpec):
    direction: str
    pinned: bool
    bytes: int


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
    identity = ("direction", "pinned", "bytes", "rank")
    metrics = (Metric("gbps", "GB/s"), Metric("time_us", "us", higher_is_better=False))

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float32",)

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float32",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[LinkCase]:
        if env.device_type != "cuda":
            env.note("host_link: not applicable on cpu (no device memory, no host link); skipped")
            return []
        nbytes = spec.max_bytes // 4 * 4
        if nbytes < 4:
            raise ConfigError("bench.max_bytes is smaller than one float32 element")
        return [LinkCase("float32", d, p, nbytes) for d in DIRECTIONS for p in (True, False)]

    def build(self, case: LinkCase, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        count = case.bytes // 4
        pinned = case.pinned
        host = torch.arange(count, dtype=torch.float32) % 1024
        if pinned:
            host = host.pin_memory()
        dev = torch.empty(count, dtype=torch.float32, device=ctx.device)
        if case.direction == "h2d":
            run = lambda: dev.copy_(host, non_blocking=pinned)  # noqa: E731
            target, source = dev, host
        else:
            dev.copy_(host)
            host_out = torch.empty(count, dtype=torch.float32, pin_memory=pinned)
            run = lambda: host_out.copy_(dev, non_blocking=pinned)  # noqa: E731
            target, source = host_out, host

        def verify() -> dict[str, Any]:
            torch.cuda.synchronize()
            wrong = int((target.cpu() != source.cpu()).sum())
            return {"wrong": wrong, "passed": wrong == 0}

        return Runnable(run, verify, target)

    def figures(self, case: LinkCase, seconds: float, where: Where) -> dict[str, Any]:
        return {"gbps": case.bytes / seconds / 1e9}


BENCHMARK = HostLink()
