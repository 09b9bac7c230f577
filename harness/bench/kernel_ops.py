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

import functools
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from harness import units
from harness.bench import memory
from harness.bench.base import Benchmark, BenchSpec, Case, Column, PlanEnv
from harness.config.compose import config_dir, group_options
from harness.devices import DTYPES, device_name
from harness.dist import Comm, DistContext
from harness.errors import ConfigError
from harness.hardware import profile_for

OPS = ("rms_norm", "swiglu", "rope", "fused_linear_cross_entropy")
IMPLS = ("eager", "compile", "fused")  # in this order: speedups refer to the cases before
MODES = ("fwd", "fwd_bwd")
DEFAULT_MODELS = {"cuda": ("llama3-1b", "llama3-8b", "llama3-70b"), "cpu": ("small",)}
DEFAULT_TOKENS = {"cuda": 16384, "cpu": 256}  # GPU: a micro-batch of 4 x 4096
# Largest error accepted against the float32 reference, relative to its largest magnitude.
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


@dataclass(frozen=True)
class Dims:
    """The sizes of a model preset the ops run at."""

    dim: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int


@functools.cache
def model_dims(name: str) -> Dims:
    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"bench.kernel_models: unknown model {name!r}; choices: {', '.join(group_options('model'))}")
    data = OmegaConf.load(path)
    return Dims(data.dim, data.ffn_dim, data.n_heads, data.n_kv_heads, data.vocab_size)


def op_shapes(op: str, d: Dims, tokens: int) -> dict[str, tuple[int, ...]]:
    """The input tensors of `op` for one call over `tokens` tokens (batch 1)."""
    head_dim = d.dim // d.n_heads
    return {
        "rms_norm": {"x": (tokens, d.dim), "weight": (d.dim,)},
        "swiglu": {"gate": (tokens, d.ffn_dim), "up": (tokens, d.ffn_dim)},
        "rope": {"q": (1, tokens, d.n_heads, head_dim), "k": (1, tokens, d.n_kv_heads, head_dim)},
        "fused_linear_cross_entropy": {"hidden": (tokens, d.dim), "weight": (d.vocab_size, d.dim)},
    }[op]


def op_bytes(op: str, shapes: dict[str, tuple[int, ...]], size: int, mode: str) -> int:
    """Minimal bytes moved: forward reads the inputs and writes the outputs once; backward
    reads the saved inputs and the output gradients and writes the input gradients."""
    n = {k: math.prod(v) for k, v in shapes.items()}
    if op == "rms_norm":  # fwd x, w -> y; bwd x, dy, w -> dx, dw
        fwd, bwd = 2 * n["x"] + n["weight"], 3 * n["x"] + 2 * n["weight"]
    elif op == "swiglu":  # fwd g, u -> y; bwd dy, g, u -> dg, du
        fwd, bwd = 3 * n["gate"], 5 * n["gate"]
    elif op == "rope":  # q, k -> q', k' each way (the cos/sin tables stay in cache)
        fwd = bwd = 2 * (n["q"] + n["k"])
    else:  # hidden, weight read; backward writes their gradients
        fwd, bwd = n["hidden"] + n["weight"], n["hidden"] + n["weight"]
    return size * (fwd if mode == "fwd" else fwd + bwd)


def op_flops(op: str, shapes: dict[str, tuple[int, ...]], mode: str) -> int | None:
    """Matmul FLOPs of the fused cross-entropy (2·T·h·V forward, twice that backward)."""
    if op != "fused_linear_cross_entropy":
        return None
    tokens, dim = shapes["hidden"]
    forward = 2 * tokens * dim * shapes["weight"][0]
    return forward if mode == "fwd" else 3 * forward


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

    def __init__(self) -> None:
        # Per-rank medians of this run's cases, for the speedups (each rank is its own process).
        self._seconds: dict[tuple, float] = {}
        self._copy_gbps: float | None = None

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("bfloat16", "float16", "float32")

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("bfloat16",) if device_type == "cuda" else ("float32",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], env: PlanEnv) -> list[dict]:
        self._seconds.clear()
        self._copy_gbps = None
        impls = spec.kernel_impls or IMPLS
        if spec.kernel_timing == "graph" and env.device_type != "cuda":
            raise ConfigError(f"bench.kernel_timing=graph needs a CUDA device; on {env.device_type} use launch")
        if env.device_type != "cuda" and "fused" in impls:
            if spec.kernel_impls:
                raise ConfigError(f"bench.kernel_impls: fused needs a CUDA device (Triton); choices on "
                                  f"{env.device_type}: eager, compile")  # fmt: skip
            env.note(f"kernels: fused not applicable on {env.device_type} (Triton's interpreter is not a speed "
                     "measure); eager and compile only")  # fmt: skip
            impls = tuple(i for i in impls if i != "fused")
        tokens = spec.kernel_tokens or DEFAULT_TOKENS.get(env.device_type, 256)
        models = spec.kernel_models or DEFAULT_MODELS.get(env.device_type, ("small",))
        # The copy-bandwidth reference is the memory plug-in's own float32 copy case.
        cases: list[dict] = [
            {**case, "op": "copy", "impl": "torch"}
            for case in memory.BENCHMARK.plan(spec, ("float32",), env)
            if case["kernel"] == "copy"
        ]
        if spec.kernel_timing == "graph" and "fused_linear_cross_entropy" in (spec.kernel_ops or OPS):
            env.note("kernels: fused_linear_cross_entropy is timed launch by launch: its target checks wait "
                     "for the device, which a CUDA graph cannot capture")  # fmt: skip
        for dtype in dtypes:
            size = DTYPES[dtype][1]
            for model in models:
                dims = model_dims(model)
                for op in spec.kernel_ops or OPS:
                    shapes = op_shapes(op, dims, tokens)
                    # Inputs, gradients and the reference's float32 copies; the unfused
                    # cross-entropy also holds its logits in float32 and their gradient.
                    need = sum(math.prod(s) for s in shapes.values()) * (2 * size + 8)
                    if op == "fused_linear_cross_entropy":
                        need += tokens * dims.vocab_size * (2 * size + 8)
                    env.require(need, f"kernels: {op} at the sizes of {model} with {tokens} tokens")
                    for mode in MODES:
                        timing = "launch" if op == "fused_linear_cross_entropy" else spec.kernel_timing
                        for impl in impls:
                            cases.append({"op": op, "model": model, "mode": mode, "impl": impl, "dtype": dtype,
                                          "timing": timing,
                                          "tokens": tokens, "shape": " ".join("x".join(map(str, s)) for s in
                                                                              shapes.values()),
                                          "bytes": op_bytes(op, shapes, size, mode)})  # fmt: skip
        return cases

    def build(self, case: dict, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Case:
        if case["op"] == "copy":
            return self._copy_case(case, ctx, spec, comm)
        from harness.bench.kernel_cases import build_case  # imports kernels (Triton) only when needed

        op_case = build_case(case, model_dims(case["model"]), ctx.device, seed=spec.seed + ctx.rank)
        peak = profile_for(device_name(ctx.device.type), ctx.device.type)
        peak_gbps = peak.memory_tbps * 1000 if peak and peak.memory_tbps else None
        key = (case["op"], case["model"], case["mode"], case["dtype"])
        flops = op_flops(case["op"], op_shapes(case["op"], model_dims(case["model"]), case["tokens"]), case["mode"])

        def figures(seconds: float) -> dict[str, Any]:
            self._seconds[(*key, case["impl"])] = seconds
            gbps = units.algbw_gbps(case["bytes"], seconds)
            out: dict[str, Any] = {"gbps": gbps}
            if self._copy_gbps:
                out["bw_fraction"] = gbps / self._copy_gbps
                out["copy_gbps"] = self._copy_gbps
            if peak_gbps:
                out["bw_fraction_peak"] = gbps / peak_gbps
            if flops:
                out["tflops"] = units.tflops(flops, seconds)
            for base in ("eager", "compile"):
                before = self._seconds.get((*key, base))
                if before and case["impl"] != base:
                    out[f"speedup_vs_{base}"] = before / seconds
            return out

        labels = ("op", "model", "mode", "impl", "dtype", "tokens", "shape", "bytes", "timing")
        return Case({k: case[k] for k in labels},
                    op_case.run, op_case.verify, op_case.output, figures, reset=op_case.reset)  # fmt: skip

    def _copy_case(self, case: dict, ctx: DistContext, spec: BenchSpec, comm: Comm) -> Case:
        inner = memory.BENCHMARK.build(case, ctx, spec, comm)

        def figures(seconds: float) -> dict[str, Any]:
            self._copy_gbps = units.algbw_gbps(case["bytes"], seconds)
            return {"gbps": self._copy_gbps}

        labels = {"op": "copy", "impl": "torch", "mode": "fwd", "dtype": "float32", "bytes": case["bytes"]}
        return Case(labels, inner.run, inner.verify, inner.output, figures)

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
