"""gemm: C = A·B per rank, TFLOP/s = 2·m·n·k / t, a MAMF-style search over shapes.

Shapes come from bench.shapes and the bench.m × bench.n × bench.k grid (mamf-finder's ranges);
per dtype the summary gives the best shape (MAMF), the median and the geometric mean over
shapes, with the efficiency against the device's datasheet peak where a hardware profile knows
it. Every shape is checked: a sample of rows of A times a sample of columns of B in float64 on
the same (already rounded) inputs, so the check measures the product's error and not the input
rounding. Row 0 and column 0 are always in the sample.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

from harness import units
from harness.bench.base import Benchmark, BenchSpec, CaseSpec, GateFigure, GateValue, PlanEnv, Runnable, Where
from harness.config.schema import BenchConfig
from harness.config.validate import shapes as parse_shapes
from harness.config.validate import sizes
from harness.devices import cuda_capability_note, device_dtypes
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.dtypes import itemsize, torch_dtype
from harness.errors import ConfigError
from harness.hardware import peak_tflops
from harness.results.kinds import Metric

# Largest normwise relative error accepted per dtype: a few times what rounding gives for
# k up to 16K, far below what a broken unit gives (order 1).
TOLERANCE = {
    "float64": 1e-10,
    "float32": 1e-4,
    "tf32": 5e-3,
    "float16": 5e-3,
    "bfloat16": 2e-2,
    "float8": 3e-2,
}
DEFAULT_DTYPES = {
    "cpu": ("float32", "bfloat16", "float64"),
    "cuda": ("bfloat16", "float16", "tf32", "float32", "float64", "float8"),
}
DEFAULT_SHAPES = {
    "cpu": ((512, 512, 512), (1024, 1024, 1024), (1024, 128, 1024), (128, 1024, 1024)),
    "cuda": ((4096, 4096, 4096), (8192, 8192, 8192), (8192, 1024, 8192), (1024, 8192, 8192)),
}
SAMPLE = 64  # rows and columns of the fp64 check
TFLOPS = GateFigure(
    "gemm_{dtype}_tflops", "TFLOP/s", "gpu", datasheet="peak_tflops", title="GEMM {dtype}: best TFLOP/s of each GPU"
)


@dataclass(frozen=True)
class GemmOptions:
    """bench.shapes plus the bench.m x bench.n x bench.k grid; None: the device's default."""

    shapes: tuple[tuple[int, int, int], ...] | None = None


@dataclass(frozen=True)
class GemmCase(CaseSpec):
    m: int
    n: int
    k: int

    def labels(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "m": self.m, "n": self.n, "k": self.k, "shape": f"{self.m}x{self.n}x{self.k}"}


def _grid(bench: BenchConfig) -> list[tuple[int, int, int]]:
    dims = {key: sizes(f"bench.{key}", getattr(bench, key)) for key in ("m", "n", "k")}
    given = [key for key, found in dims.items() if found is not None]
    if not given:
        return []
    if len(given) != 3:
        missing = [key for key in dims if key not in given]
        raise ConfigError(f"bench.m, bench.n and bench.k make a grid together; also give {', '.join(missing)}")
    return list(itertools.product(dims["m"], dims["n"], dims["k"]))  # type: ignore[arg-type]


class Gemm(Benchmark):
    name = "gemm"
    description = "matmul C = A·B on every rank's device at once: TFLOP/s per dtype and shape, fp64-checked"
    collective = False
    keys = ("dtype", "shapes", "m", "n", "k", "warmup", "iters")
    columns = (
        Column("rank", "rank"),
        Column("dtype", "dtype"),
        Column("shape", "m×n×k"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("tflops", "TFLOP/s", "{:.3f}"),
        Column("tflops_best", "best of N", "{:.3f}"),
        Column("efficiency", "of peak", "{:.1%}"),
        Column("rel_error", "rel. error", "{:.1e}"),
    )
    identity = ("dtype", "m", "n", "k", "rank")
    metrics = (Metric("tflops", "TFLOP/s"), Metric("time_us", "us", higher_is_better=False))
    gates = (TFLOPS,)
    best_of = ("tflops",)

    def parse_options(self, bench: BenchConfig) -> GemmOptions:
        shapes = list(parse_shapes("bench.shapes", bench.shapes) or ()) + _grid(bench)
        return GemmOptions(tuple(dict.fromkeys(shapes)) or None)

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return tuple(d for d in device_dtypes(device_type) if d in TOLERANCE)

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return DEFAULT_DTYPES[device_type]

    def skipped_note(self, dtype: str, device_type: str) -> str:
        why = cuda_capability_note(dtype) if device_type == "cuda" else "the CPU has no such unit"
        return f"gemm: skipping {dtype} ({why})"

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[GemmCase]:
        shapes = spec.options_of(self).shapes or DEFAULT_SHAPES[env.device_type]
        cases = []
        for dtype in dtypes:
            size = itemsize(dtype)
            for m, n, k in shapes:
                if dtype == "float8" and (k % 16 or n % 16):
                    # torch._scaled_mm (cuBLASLt FP8) needs k and n to be multiples of 16.
                    env.note(f"gemm: float8 skips {m}x{n}x{k} (k and n must be multiples of 16)")
                    continue
                out_size = 2 if dtype == "float8" else size
                # A, B and C, plus the float32 copies A and B are made from
                need = (m * k + k * n) * (size + 4) + m * n * out_size
                env.require(need, f"bench.shapes: {m}x{n}x{k} in {dtype}")
                cases.append(GemmCase(dtype, m, n, k))
        if dtypes and not cases:
            raise ConfigError(f"gemm: no shape can run in {', '.join(dtypes)}: {'; '.join(env.notes)}")
        return cases

    def build(self, case: GemmCase, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        dtype, m, n, k = case.dtype, case.m, case.n, case.k
        device = ctx.device
        gen = torch.Generator(device="cpu").manual_seed(spec.seed * 1000003 + ctx.rank)
        a32 = torch.randn(m, k, generator=gen).to(device)
        b32 = torch.randn(k, n, generator=gen).to(device)
        if device.type == "cuda":
            # float32 means IEEE fp32; tf32 is asked for by name.
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        if dtype == "float8":
            a = a32.to(torch.float8_e4m3fn)
            b = b32.t().contiguous().to(torch.float8_e4m3fn).t()  # _scaled_mm wants B column-major
            one = torch.ones((), device=device)
            out = torch.empty(m, n, dtype=torch.bfloat16, device=device)

            def run() -> None:
                torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, out=out)
        else:
            a, b = a32.to(torch_dtype(dtype)), b32.to(torch_dtype(dtype))
            out = torch.empty(m, n, dtype=a.dtype, device=device)

            def run() -> None:
                torch.mm(a, b, out=out)

        del a32, b32
        rows = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(m, generator=gen)[: SAMPLE - 1]]).to(device)
        cols = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(n, generator=gen)[: SAMPLE - 1]]).to(device)
        tolerance = TOLERANCE[dtype]

        def verify() -> dict:
            ref = a[rows].to(torch.float64) @ b[:, cols].to(torch.float64)
            got = out[rows][:, cols].to(torch.float64)
            rel_error = float(torch.linalg.norm(got - ref) / torch.linalg.norm(ref).clamp_min(1e-300))
            return {"rel_error": rel_error, "tolerance": tolerance, "passed": rel_error <= tolerance}

        return Runnable(run, verify, out)

    def figures(self, case: GemmCase, seconds: float, where: Where) -> dict[str, Any]:
        tflops = units.tflops(units.gemm_flops(case.m, case.n, case.k), seconds)
        peak = peak_tflops(where.device_name, where.device_type, case.dtype)
        return {"tflops": tflops, "peak_tflops": peak, "efficiency": tflops / peak if peak else None}

    def gate_values(self, rows: list[dict], scope: str) -> list[GateValue]:
        """Each rank's best TFLOP/s per dtype (mamf-finder's MAMF of that GPU)."""
        best: dict[tuple[int, str], float] = {}
        for r in rows:
            if r.get("tflops") is not None:
                key = (r["rank"], r["dtype"])
                best[key] = max(best.get(key, 0.0), r["tflops"])
        return [GateValue(TFLOPS, TFLOPS.name.format(dtype=dtype), value, rank=rank, dtype=dtype)
                for (rank, dtype), value in sorted(best.items())]  # fmt: skip

    def gated_dtypes(self, thresholds: dict[str, float]) -> tuple[str, ...]:
        """The dtypes a profile's thresholds gate (gemm_<dtype> keys)."""
        prefix, suffix = TFLOPS.threshold_key.split("{dtype}")
        return tuple(k[len(prefix) : len(k) - len(suffix)] for k in thresholds if k.startswith(prefix) and
                     k.endswith(suffix))  # fmt: skip

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        """Per dtype: MAMF (the best shape), median and geometric mean over shapes, of the slowest
        rank per shape (a node is as fast as its slowest GPU)."""
        out: dict[str, Any] = {}
        for dtype in dict.fromkeys(r["dtype"] for r in rows):
            per_shape: dict[str, dict] = {}
            for row in (r for r in rows if r["dtype"] == dtype and r.get("tflops")):
                slowest = per_shape.get(row["shape"])
                if slowest is None or row["tflops"] < slowest["tflops"]:
                    per_shape[row["shape"]] = row
            if not per_shape:
                continue
            values = [r["tflops"] for r in per_shape.values()]
            best = max(per_shape.values(), key=lambda r: r["tflops"])
            peak = best.get("peak_tflops")
            out[dtype] = {
                "best_tflops": best["tflops"],
                "best_shape": best["shape"],
                "median_tflops": statistics.median(values),
                "geomean_tflops": math.exp(statistics.fmean(math.log(v) for v in values)),
                "peak_tflops": peak,
                "best_efficiency": best["tflops"] / peak if peak else None,
                "shapes": len(values),
            }
        return out


BENCHMARK = Gemm()
