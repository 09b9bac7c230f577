"""gemm: C = A·B per rank, TFLOP/s = 2·m·n·k / t (mamf-finder's count), checked against fp64.

The check multiplies a sample of rows of A by a sample of columns of B in float64 on the same
(already rounded) inputs, so it measures the product's error rather than the input rounding.
Row 0 and column 0 are always in the sample.
"""

from __future__ import annotations

import torch

from harness import units
from harness.bench.base import Benchmark, BenchSpec, Case, Column
from harness.devices import DTYPES, device_dtypes
from harness.dist import DistContext
from harness.errors import ConfigError

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
DEFAULT_SHAPES = {
    "cpu": ((512, 512, 512), (1024, 1024, 1024), (1024, 128, 1024), (128, 1024, 1024)),
    "cuda": ((4096, 4096, 4096), (8192, 8192, 8192), (8192, 1024, 8192), (1024, 8192, 8192)),
}
SAMPLE = 64  # rows and columns of the fp64 check


class Gemm(Benchmark):
    name = "gemm"
    description = "matmul C = A·B on every rank's device at once: TFLOP/s per dtype and shape, fp64-checked"
    collective = False
    keys = ("dtype", "shapes", "warmup", "iters")
    columns = (
        Column("rank", "rank"),
        Column("dtype", "dtype"),
        Column("shape", "m×n×k"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("tflops", "TFLOP/s", "{:.3f}"),
        Column("rel_error", "rel. error", "{:.1e}"),
    )

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return tuple(d for d in device_dtypes(device_type) if d in TOLERANCE)

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        if device_type == "cpu":
            return ("float32", "bfloat16", "float64")
        wanted = ("bfloat16", "float16", "tf32", "float32", "float64", "float8")
        return tuple(d for d in wanted if d in self.dtypes(device_type))

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], device_type: str, memory_bytes: int) -> list[dict]:
        shapes = spec.shapes or DEFAULT_SHAPES[device_type]
        cases = []
        for dtype in dtypes:
            size = DTYPES[dtype][1]
            for m, n, k in shapes:
                out_size = 2 if dtype == "float8" else size
                need = (m * k + k * n) * size + m * n * out_size
                if need > 0.9 * memory_bytes:
                    raise ConfigError(
                        f"bench.shapes: {m}x{n}x{k} in {dtype} needs {need / 2**30:.1f} GiB but the device has "
                        f"{memory_bytes / 2**30:.1f} GiB; choose smaller shapes"
                    )
                cases.append({"dtype": dtype, "m": m, "n": n, "k": k})
        return cases

    def build(self, case: dict, ctx: DistContext, spec: BenchSpec) -> Case:
        dtype, m, n, k = case["dtype"], case["m"], case["n"], case["k"]
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
                out.copy_(torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
        else:
            a, b = a32.to(DTYPES[dtype][0]), b32.to(DTYPES[dtype][0])
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

        flops = units.gemm_flops(m, n, k)
        labels = {"dtype": dtype, "m": m, "n": n, "k": k, "shape": f"{m}x{n}x{k}"}
        return Case(labels, run, verify, out, figures=lambda seconds: {"tflops": units.tflops(flops, seconds)})


BENCHMARK = Gemm()
