"""kernels: the fused ops of `kernels/` against PyTorch eager and `torch.compile`, forward and
forward + backward, at the sizes of real models (bench.kernel_models presets).

GB/s counts the minimal bytes each op must move (inputs read once, outputs written once;
`op_bytes`). Each rank first measures its device's copy bandwidth with the `memory` plug-in's
copy kernel, and every row gives its GB/s as a fraction of that (`bw_fraction`) and, where a
hardware profile knows it, of the datasheet (`bw_fraction_peak`). The fused cross-entropy is
bound by its matmuls, so it also reports TFLOP/s, and on CUDA every row reports the peak
memory the call allocated beyond its inputs (the point of the fused cross-entropy).

Eager is `kernels.reference` (the definitions the kernel tests use), compile is
`torch.compile` of it. The fused path needs a CUDA device: in the interpreter Triton is not a
speed measure, so on CPU it is reported as not applicable. Speedups over eager and compile are
computed on each rank from the cases of the same op, size and mode, run just before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness import units
from harness.bench import memory
from harness.bench.base import Benchmark, BenchSpec, CaseSpec, PlanEnv, Runnable, Where
from harness.bench.kernel_cases import OPS, build_case, model_dims, op_bytes, op_flops, op_shapes
from harness.config.compose import group_options
from harness.config.schema import BenchConfig
from harness.config.validate import choices, int_at_least
from harness.display import Column
from harness.dist import Comm, DistContext
from harness.dtypes import itemsize
from harness.errors import ConfigError
from harness.hardware import profile_for
from harness.results.kinds import Metric

IMPLS = ("eager", "compile", "fused")  # in this order: speedups refer to the cases before
MODES = ("fwd", "fwd_bwd")
TIMINGS = ("launch", "graph")
DEFAULT_MODELS = {"cuda": ("llama3-1b", "llama3-8b", "llama3-70b"), "cpu": ("small",)}
DEFAULT_TOKENS = {"cuda": 16384, "cpu": 256}  # GPU: a micro-batch of 4 x 4096


@dataclass(frozen=True)
class KernelOptions:
    """bench.kernel_*, parsed; None: the device's default."""

    ops: tuple[str, ...] | None = None
    impls: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    tokens: int | None = None
    timing: str = "launch"


@dataclass(frozen=True)
class KernelCase(CaseSpec):
    op: str
    model: str
    mode: str
    impl: str
    timing: str
    tokens: int
    shape: str
    bytes: int
    """Minimal bytes the op moves (op_bytes)."""


@dataclass(frozen=True)
class CopyCase(memory.MemoryCase):
    """The copy-bandwidth reference: the memory plug-in's float32 copy, labelled as an op."""

    def labels(self) -> dict[str, Any]:
        return {"op": "copy", "impl": "torch", "mode": "fwd", "dtype": self.dtype, "bytes": self.bytes}


class Kernels(Benchmark):
    name = "kernels"
    description = "fused Triton ops vs PyTorch eager and torch.compile: time, GB/s, speedups, peak memory"
    collective = False
    keys = ("dtype", "kernel_ops", "kernel_impls", "kernel_models", "kernel_tokens", "kernel_timing", "warmup", "iters")
    columns = (
        Column("rank", "rank"),
        Column("op", "op"),
        Column("model", "sizes of"),
        Column("mode", "mode"),
        Column("impl", "impl"),
        Column("dtype", "dtype"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("gbps", "GB/s", "{:.1f}"),
        Column("bw_fraction", "of copy BW", "{:.0%}"),
        Column("tflops", "TFLOP/s", "{:.1f}"),
        Column("speedup_vs_eager", "vs eager", "{:.2f}x"),
        Column("speedup_vs_compile", "vs compile", "{:.2f}x"),
        Column("peak_mem_bytes", "peak mem (B)", "{:,}"),
        Column("max_rel_error", "rel. error", "{:.1e}"),
    )
    identity = ("op", "model", "mode", "impl", "dtype", "tokens", "rank")
    metrics = (Metric("gbps", "GB/s"), Metric("time_us", "us", higher_is_better=False),
               Metric("speedup_vs_eager", "x"), Metric("speedup_vs_compile", "x"))  # fmt: skip

    def parse_options(self, bench: BenchConfig) -> KernelOptions:
        tokens = bench.kernel_tokens
        return KernelOptions(
            ops=choices("bench.kernel_ops", bench.kernel_ops, OPS),
            impls=choices("bench.kernel_impls", bench.kernel_impls, IMPLS),
            models=choices("bench.kernel_models", bench.kernel_models, group_options("model")),
            tokens=None if tokens is None else int_at_least("bench.kernel_tokens", tokens, 1),
            timing=(choices("bench.kernel_timing", bench.kernel_timing, TIMINGS) or ("launch",))[0],
        )

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("bfloat16", "float16", "float32")

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("bfloat16",) if device_type == "cuda" else ("float32",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[CaseSpec]:
        options: KernelOptions = spec.options_of(self)
        impls = options.impls or IMPLS
        if options.timing == "graph" and env.device_type != "cuda":
            raise ConfigError(f"bench.kernel_timing=graph needs a CUDA device; on {env.device_type} use launch")
        if env.device_type != "cuda" and "fused" in impls:
            if options.impls:
                raise ConfigError(f"bench.kernel_impls: fused needs a CUDA device (Triton); choices on "
                                  f"{env.device_type}: eager, compile")  # fmt: skip
            env.note(f"kernels: fused not applicable on {env.device_type} (Triton's interpreter is not a speed "
                     "measure); eager and compile only")  # fmt: skip
            impls = tuple(i for i in impls if i != "fused")
        tokens = options.tokens or DEFAULT_TOKENS.get(env.device_type, 256)
        models = options.models or DEFAULT_MODELS.get(env.device_type, ("small",))
        # The copy-bandwidth reference is the memory plug-in's own float32 copy case.
        cases: list[CaseSpec] = [
            CopyCase(c.dtype, c.kernel, c.array_bytes, c.bytes, c.count)
            for c in memory.BENCHMARK.plan(spec, ("float32",), env)
            if c.kernel == "copy"
        ]
        if options.timing == "graph" and "fused_linear_cross_entropy" in (options.ops or OPS):
            env.note("kernels: fused_linear_cross_entropy is timed launch by launch: its target checks wait "
                     "for the device, which a CUDA graph cannot capture")  # fmt: skip
        for dtype in dtypes:
            size = itemsize(dtype)
            for model in models:
                dims = model_dims(model)
                for op in options.ops or OPS:
                    shapes = op_shapes(op, dims, tokens)
                    # Inputs, gradients and the reference's float32 copies; the unfused
                    # cross-entropy also holds its logits in float32 and their gradient.
                    need = sum(math.prod(s) for s in shapes.values()) * (2 * size + 8)
                    if op == "fused_linear_cross_entropy":
                        need += tokens * dims.vocab_size * (2 * size + 8)
                    env.require(need, f"kernels: {op} at the sizes of {model} with {tokens} tokens")
                    for mode in MODES:
                        timing = "launch" if op == "fused_linear_cross_entropy" else options.timing
                        shape = " ".join("x".join(map(str, s)) for s in shapes.values())
                        for impl in impls:
                            cases.append(KernelCase(dtype, op, model, mode, impl, timing, tokens, shape,
                                                    op_bytes(op, shapes, size, mode)))  # fmt: skip
        return cases

    def build(self, case: CaseSpec, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Runnable:
        if isinstance(case, CopyCase):
            return memory.BENCHMARK.build(case, ctx, spec, comm)
        assert isinstance(case, KernelCase)
        op_case = build_case(case, model_dims(case.model), ctx.device, seed=spec.seed + ctx.rank)
        return Runnable(op_case.run, op_case.verify, op_case.output, reset=op_case.reset)

    def figures(self, case: CaseSpec, seconds: float, where: Where) -> dict[str, Any]:
        if isinstance(case, CopyCase):
            return {"gbps": units.algbw_gbps(case.bytes, seconds)}
        assert isinstance(case, KernelCase)
        out: dict[str, Any] = {"gbps": units.algbw_gbps(case.bytes, seconds)}
        profile = profile_for(where.device_name, where.device_type)
        if profile and profile.memory_tbps:
            out["bw_fraction_peak"] = out["gbps"] / (profile.memory_tbps * 1000)
        flops = op_flops(case.op, op_shapes(case.op, model_dims(case.model), case.tokens), case.mode)
        if flops:
            out["tflops"] = units.tflops(flops, seconds)
        return out

    def derive(self, row: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
        """Figures against this rank's earlier rows: the fraction of its copy bandwidth, and the
        speedups over the eager and compiled cases of the same op, model, mode and dtype."""
        if row["op"] == "copy":
            return {}
        mine = [r for r in earlier if r.get("rank") == row.get("rank")]
        out: dict[str, Any] = {}
        copy = next((r for r in reversed(mine) if r["op"] == "copy" and r.get("gbps")), None)
        if copy and row.get("gbps"):
            out["bw_fraction"] = row["gbps"] / copy["gbps"]
            out["copy_gbps"] = copy["gbps"]
        same = ("op", "model", "mode", "dtype")
        for base in ("eager", "compile"):
            before = next((r for r in mine if r.get("impl") == base and all(r.get(k) == row.get(k) for k in same)),
                          None)  # fmt: skip
            if before and row["impl"] != base and row.get("time_us"):
                out[f"speedup_vs_{base}"] = before["time_us"] / row["time_us"]
        return out

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        copies = [r["gbps"] for r in rows if r["op"] == "copy"]
        if copies:
            out["copy_gbps_min_rank"] = min(copies)
        fused = [r for r in rows if r.get("impl") == "fused"]
        if not fused:
            out["fused"] = "not applicable (needs a CUDA device)"
        for row in fused:
            if row.get("rank", 0) != 0:
                continue
            label = f"{row['op']} {row['model']} {row['mode']}"
            parts = [f"{row['speedup_vs_eager']:.2f}x eager" if row.get("speedup_vs_eager") else None,
                     f"{row['speedup_vs_compile']:.2f}x compile" if row.get("speedup_vs_compile") else None,
                     f"{row['bw_fraction']:.0%} of copy BW" if row.get("bw_fraction") else None]  # fmt: skip
            out[label] = ", ".join(p for p in parts if p)
        return out


BENCHMARK = Kernels()
