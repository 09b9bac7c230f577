"""One measured case of the `kernels` benchmark: the inputs of an op at a model's sizes, the call
of one implementation (eager, compile, fused) in one mode (fwd, fwd_bwd), and its check against
the float32 reference (`kernels.reference`) with autograd for the gradients."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf

from harness.config.compose import config_dir, group_options
from harness.dtypes import torch_dtype
from harness.errors import ConfigError, did_you_mean

OPS = ("rms_norm", "swiglu", "rope", "fused_linear_cross_entropy")
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
        choices = group_options("model")
        raise ConfigError(f"bench.kernel_models: unknown model {name!r}{did_you_mean(name, choices)}; "
                          f"choices: {', '.join(choices)}")  # fmt: skip
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


@functools.cache
def reference_ops() -> dict[str, Callable]:
    """The PyTorch definitions (kernels.reference): the eager baseline and the check."""
    from kernels import reference  # `kernels` brings Triton: imported when a kernel case is built

    return {"rms_norm": reference.rms_norm, "swiglu": reference.swiglu, "rope": reference.rope,
            "fused_linear_cross_entropy": reference.linear_cross_entropy}  # fmt: skip


@functools.cache
def fused_ops() -> dict[str, Callable]:
    """The fused ops of `kernels`."""
    import kernels

    return {"rms_norm": kernels.rms_norm, "swiglu": kernels.swiglu, "rope": kernels.rope,
            "fused_linear_cross_entropy": kernels.fused_linear_cross_entropy}  # fmt: skip


@functools.cache
def compiled(op: str) -> Callable:
    """torch.compile of the reference, once per op and process (shapes recompile inside)."""
    return torch.compile(reference_ops()[op], dynamic=False)


@dataclass
class OpCase:
    """What the driver needs: the timed call, the untimed check and the tensor it checks."""

    run: Callable[[], Any]
    verify: Callable[[], dict[str, Any]]
    output: torch.Tensor
    reset: Callable[[], Any]


def _inputs(op: str, dims: Dims, tokens: int, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    """(differentiable inputs, other arguments) in float32 on the host, seeded."""
    shapes = op_shapes(op, dims, tokens)
    if op == "rms_norm":
        return [torch.randn(shapes["x"], generator=gen), 1 + 0.1 * torch.randn(shapes["weight"], generator=gen)], []
    if op == "swiglu":
        return [2 * torch.randn(shapes["gate"], generator=gen), torch.randn(shapes["up"], generator=gen)], []
    if op == "rope":
        from kernels.reference import rope_tables

        head_dim = shapes["q"][3]
        cos, sin = rope_tables(head_dim, tokens, 500000.0)
        return [torch.randn(shapes["q"], generator=gen), torch.randn(shapes["k"], generator=gen)], [cos, sin]
    hidden = torch.randn(shapes["hidden"], generator=gen)
    weight = torch.randn(shapes["weight"], generator=gen) / shapes["hidden"][1] ** 0.5
    return [hidden, weight], [torch.randint(0, dims.vocab_size, (tokens,), generator=gen)]


def _flat(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple | list) else [result]


def _rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().clamp(min=1e-6)
    return float((actual.float() - expected).abs().max() / scale)


def _graphed(call: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """`call` captured in a CUDA graph (after warm-up on a side stream, as torch's docs say):
    replaying it costs one launch, so the timing is the device's alone."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # compile, autotune and settle the allocator outside the capture
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def build_case(case: Any, dims: Dims, device: torch.device, *, seed: int) -> OpCase:
    """Allocate one case; the first run after `reset` keeps its results for `verify`."""
    op, impl, mode = case.op, case.impl, case.mode
    dtype = torch_dtype(case.dtype)
    gen = torch.Generator().manual_seed(seed)
    leaves32, others = _inputs(op, dims, case.tokens, dtype, device, gen)
    backward = mode == "fwd_bwd"
    args = [t.to(device, dtype).requires_grad_(backward) for t in leaves32]
    others = [t.to(device) for t in others]
    reference = reference_ops()
    fn = {"eager": reference[op], "compile": compiled(op) if impl == "compile" else None,
          "fused": fused_ops()[op] if impl == "fused" else None}[impl]  # fmt: skip

    # The float32 reference with its gradients, for the check.
    ref_args = [t.to(device).requires_grad_(backward) for t in leaves32]
    ref_out = _flat(reference[op](*ref_args, *others))
    grads_out = [torch.randn(o.shape, generator=gen).to(device) if o.dim() else torch.ones((), device=device)
                 for o in ref_out]  # fmt: skip
    expected = [o.detach() for o in ref_out]
    if backward:
        expected += list(torch.autograd.grad(ref_out, ref_args, grads_out))
    del ref_args, ref_out
    grads_in = [g.to(dtype) for g in grads_out]
    state: dict[str, Any] = {"capture": False, "results": None, "peak": None}
    output = torch.empty(expected[0].shape, dtype=dtype, device=device)

    def call() -> list[torch.Tensor]:
        outs = _flat(fn(*args, *others))
        return outs + (list(torch.autograd.grad(outs, args, grads_in)) if backward else [])

    timed = _graphed(call, device) if case.timing == "graph" else call

    def run() -> None:
        if not state["capture"]:
            timed()
            return
        # The checked run (once, eager, untimed): keep the results and the peak memory.
        state["capture"] = False
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        results = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            state["peak"] = torch.cuda.max_memory_allocated(device) - base
        state["results"] = [r.detach() for r in results]
        output.copy_(results[0].detach())

    def reset() -> None:
        state["capture"] = True

    def verify() -> dict[str, Any]:
        results = [output, *state["results"][1:]]  # `output` is what fault injection corrupts
        errors = [_rel_error(r, e) for r, e in zip(results, expected, strict=True)]
        # A NaN compares false with everything: it must fail the row, not drop out of max().
        error = float("nan") if any(math.isnan(e) for e in errors) else max(errors)
        passed = all(e <= TOLERANCE[case.dtype] for e in errors)
        return {"max_rel_error": error, "passed": passed, "peak_mem_bytes": state["peak"]}

    return OpCase(run, verify, output, reset)
