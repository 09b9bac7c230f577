"""hpl: FP64 dense solve of Ax = b of order N on each rank's device (LU through torch.linalg),
FLOPs 2/3·N³ + 3/2·N² (HPL's count), and HPL's scaled-residual check, which must be below 16:
  ‖Ax − b‖∞ / (ε · (‖A‖∞ · ‖x‖∞ + ‖b‖∞) · N),  ε = float64 machine epsilon.
A and b are uniform in [−0.5, 0.5), as in HPL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness import units
from harness.bench.base import Benchmark, BenchSpec, CaseSpec, PlanEnv, Runnable, Where
from harness.config.schema import BenchConfig
from harness.config.validate import sizes
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.hardware import peak_tflops
from harness.results.kinds import Metric

THRESHOLD = 16.0
DEFAULT_N = {"cpu": (1024, 2048), "cuda": (8192, 16384)}


@dataclass(frozen=True)
class HplOptions:
    orders: tuple[int, ...] | None = None
    """bench.hpl_n; None: the device's default."""


@dataclass(frozen=True)
class HplCase(CaseSpec):
    n: int


def scaled_residual(a: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> float:
    """HPL's ‖Ax − b‖∞ / (ε (‖A‖∞ ‖x‖∞ + ‖b‖∞) N), computed in float64."""
    a, x, b = a.double(), x.double(), b.double()
    n = a.shape[0]
    eps = torch.finfo(torch.float64).eps
    residual = torch.linalg.vector_norm(a @ x - b, ord=float("inf"))
    norm_a = torch.linalg.matrix_norm(a, ord=float("inf"))
    norm_x = torch.linalg.vector_norm(x, ord=float("inf"))
    norm_b = torch.linalg.vector_norm(b, ord=float("inf"))
    scale = eps * (norm_a * norm_x + norm_b) * n
    return float(residual / scale)


class Hpl(Benchmark):
    name = "hpl"
    description = "HPL-style FP64 solve Ax=b on each rank's device: GFLOP/s with the scaled-residual check (< 16)"
    collective = False
    keys = ("hpl_n", "warmup", "iters")
    columns = (
        Column("rank", "rank"),
        Column("n", "N", "{:,}"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("gflops", "GFLOP/s", "{:.2f}"),
        Column("residual", "residual", "{:.3g}"),
    )
    identity = ("n", "rank")
    metrics = (Metric("gflops", "GFLOP/s"), Metric("time_us", "us", higher_is_better=False))

    def parse_options(self, bench: BenchConfig) -> HplOptions:
        orders = sizes("bench.hpl_n", bench.hpl_n)
        return HplOptions(tuple(orders) if orders is not None else None)

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float64",)

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float64",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[HplCase]:
        cases = []
        for n in spec.options_of(self).orders or DEFAULT_N[env.device_type]:
            env.require(3 * 8 * n * n, f"bench.hpl_n: N={n}")  # A, its LU factors, and A·x in the check
            cases.append(HplCase("float64", n))
        return cases

    def build(self, case: HplCase, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        n = case.n
        gen = torch.Generator(device="cpu").manual_seed(spec.seed * 7919 + ctx.rank)
        a = (torch.rand(n, n, generator=gen, dtype=torch.float64) - 0.5).to(ctx.device)
        b = (torch.rand(n, 1, generator=gen, dtype=torch.float64) - 0.5).to(ctx.device)
        x = torch.empty_like(b)

        def run() -> None:
            torch.linalg.solve(a, b, out=x)

        def verify() -> dict[str, Any]:
            residual = scaled_residual(a, x, b)
            return {"residual": residual, "threshold": THRESHOLD, "passed": residual < THRESHOLD}

        return Runnable(run, verify, x)

    def figures(self, case: HplCase, seconds: float, where: Where) -> dict[str, Any]:
        gflops = units.hpl_flops(case.n) / seconds / 1e9
        peak = peak_tflops(where.device_name, where.device_type, "float64")
        return {"gflops": gflops, "efficiency": gflops / 1e3 / peak if peak else None}

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        good = [r for r in rows if r.get("gflops")]
        if not good:
            return {}
        best = max(good, key=lambda r: r["gflops"])
        worst = max(r["residual"] or 0 for r in rows)
        return {"best_gflops": best["gflops"], "best_n": best["n"], "max_residual": worst}


BENCHMARK = Hpl()
