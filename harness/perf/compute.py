"""Compute time of one transformer layer on one GPU: its GEMMs at the real (per TP shard, per
micro-batch) shapes, the attention core, and the memory-bound element-wise work.

- GEMMs: from measured `harness bench gemm` rows when the device carries them (interpolated in
  log-FLOPs), else F / (peak × MAMF fraction) + a fixed per-GEMM cost, floored by the bytes the
  GEMM must move at HBM bandwidth (roofline). fp8 runs the linear layers at the fp8 ceiling; the
  attention core and everything else stays bf16 (as Transformer Engine's fp8 recipes do).
- Attention: flash attention is compute-bound; it runs the causal FLOPs (masked blocks skipped)
  at a documented fraction of the GEMM ceiling, forward and backward apart, lower for short keys.
- Element-wise: bytes per token moved by norms, residuals, RoPE, SwiGLU and layout copies at the
  achieved HBM bandwidth, plus a gap per kernel.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from harness.perf.assumptions import Assumptions
from harness.perf.device import Device, canonical_dtype
from harness.perf.shape import ModelShape


@dataclass(frozen=True)
class Gemm:
    """An (m×k)·(k×n) product."""

    name: str
    m: int
    n: int
    k: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    def bytes_moved(self, element_bytes: float) -> float:
        return element_bytes * (self.m * self.k + self.k * self.n + self.m * self.n)


def local_heads(shape: ModelShape, tp: int) -> tuple[int, int]:
    """(query heads, KV heads) on one TP rank; KV heads are replicated when tp > n_kv_heads."""
    kv = shape.n_kv_heads // tp if shape.n_kv_heads % tp == 0 else 1
    return max(1, shape.n_heads // tp), max(1, kv)


def layer_gemms(shape: ModelShape, *, tokens: int, tp: int) -> tuple[Gemm, ...]:
    """The forward GEMMs of one layer on one TP rank (Megatron split: QKV and MLP-in by columns,
    attention-out and MLP-out by rows); `tokens` = micro-batch × sequence / cp."""
    heads, kv = local_heads(shape, tp)
    q = shape.head_dim
    f = shape.ffn_dim // tp
    return (
        Gemm("qkv", tokens, (heads + 2 * kv) * q, shape.dim),
        Gemm("attn_out", tokens, shape.dim, heads * q),
        Gemm("mlp_in", tokens, 2 * f, shape.dim),
        Gemm("mlp_out", tokens, shape.dim, f),
    )


def backward_gemms(gemm: Gemm) -> tuple[Gemm, Gemm]:
    """The backward of y = x·W: the input gradient dy·Wᵀ (m×n)·(n×k) and the weight gradient
    xᵀ·dy (k×m)·(m×n): each as many FLOPs as the forward, at their own shapes."""
    return (Gemm(f"{gemm.name}_dgrad", gemm.m, gemm.k, gemm.n), Gemm(f"{gemm.name}_wgrad", gemm.k, gemm.n, gemm.m))


def head_gemm(shape: ModelShape, *, tokens: int, tp: int) -> Gemm:
    """The output projection to the (vocabulary-parallel) logits."""
    return Gemm("head", tokens, shape.vocab_size // tp, shape.dim)


def _interpolate(table: tuple[tuple[float, float], ...], flops: float) -> float:
    xs = [math.log(f) for f, _ in table]
    x = math.log(max(flops, 1.0))
    i = bisect.bisect_left(xs, x)
    if i <= 0:
        return table[0][1] * flops / table[0][0] if flops < table[0][0] else table[0][1]
    if i >= len(table):
        return table[-1][1]
    (x0, y0), (x1, y1) = (xs[i - 1], table[i - 1][1]), (xs[i], table[i][1])
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1


TILES = ((128, 256), (256, 128))
"""Output tiles of one thread block in the large bf16/fp8 GEMM kernels of cuBLAS and CUTLASS on
Hopper and Blackwell (128×256, either way round)."""


def wave_efficiency(m: int, n: int, sm_count: int | None) -> float:
    """Wave quantization (NVIDIA, "Matrix Multiplication Background" user's guide): the output is
    cut into tiles that run in waves of one tile per SM, so the last wave may leave SMs idle:
    tiles / (waves × SMs), the better of the two tile orientations. With less than one wave the
    library splits K instead (the fixed per-GEMM cost accounts for small GEMMs)."""
    if not sm_count:
        return 1.0
    best = 0.0
    for tile_m, tile_n in TILES:
        tiles = math.ceil(m / tile_m) * math.ceil(n / tile_n)
        if tiles < sm_count:
            return 1.0
        best = max(best, tiles / (math.ceil(tiles / sm_count) * sm_count))
    return best


def gemm_time_s(gemm: Gemm, device: Device, dtype: str, assumptions: Assumptions) -> float:
    """Seconds for one GEMM on one GPU: measured rows if calibrated, else the roofline of the
    ceiling (peak × MAMF fraction, stretched by wave quantization) and HBM, plus a fixed cost."""
    dtype = canonical_dtype(dtype)
    flops = gemm.flops
    if flops == 0:
        return 0.0
    table = device.gemm_table.get(dtype)
    if table:
        return flops / (_interpolate(table, flops) * 1e12)
    ceiling = device.gemm_ceiling_tflops(dtype) * 1e12
    compute = flops / (ceiling * wave_efficiency(gemm.m, gemm.n, device.sm_count))
    element = {"float8": 1.0, "float32": 4.0}.get(dtype, 2.0)
    memory = gemm.bytes_moved(element) / (device.memory_tbps * 1e12 * assumptions.memory_efficiency) if (
        device.memory_tbps) else 0.0  # fmt: skip
    return max(compute, memory) + assumptions.gemm_fixed_s


def attention_flops(shape: ModelShape, *, seq_len: int, micro_batch: int, tp: int, cp: int, causal: bool) -> float:
    """Forward FLOPs of the attention core (QKᵀ and PV) on one GPU: 4·b·T²·Q·H / (tp·cp), halved
    for the causal mask. Training (forward + backward) is 3× this in the model-FLOPs count."""
    heads, _ = local_heads(shape, tp)
    full = 4.0 * micro_batch * seq_len * seq_len * shape.head_dim * heads / cp
    return full / 2 if causal else full


def attention_time_s(
    shape: ModelShape, *, seq_len: int, micro_batch: int, tp: int, cp: int, dtype: str, device: Device,
    assumptions: Assumptions,
) -> tuple[float, float]:  # fmt: skip
    """(forward, backward) seconds of causal flash attention on one GPU. The backward does 2.5×
    the forward's FLOPs (it recomputes the scores), as FlashAttention's benchmarks count it.
    Attention stays in bf16 when the linear layers run in fp8."""
    flops = attention_flops(shape, seq_len=seq_len, micro_batch=micro_batch, tp=tp, cp=cp, causal=True)
    dtype = canonical_dtype(dtype)
    ceiling = device.gemm_ceiling_tflops("bfloat16" if dtype == "float8" else dtype) * 1e12
    length = seq_len  # keys each query block streams over (the full sequence under CP's all-gather)
    shape_factor = length / (length + assumptions.attention_half_tokens)
    fwd = flops / (ceiling * assumptions.attention_fwd_vs_gemm * shape_factor)
    bwd = 2.5 * flops / (ceiling * assumptions.attention_bwd_vs_gemm * shape_factor)
    return fwd, bwd


def elementwise_bytes_per_token(shape: ModelShape, *, tp: int, sequence_parallel: bool, fused: bool) -> float:
    """HBM bytes per token and layer moved by the non-GEMM ops, forward only (backward: 2×).

    Eager PyTorch (torchtitan's Llama): RMSNorm casts to fp32, squares, averages, scales, casts
    back and multiplies the weight (36 B per element), residual adds 6 B, RoPE on q and k in fp32
    complex arithmetic 20 B, the attention layout copies of q, k, v and the output 4 B, SwiGLU's
    silu and product 10 B per ffn element. Fused kernels read and write each tensor once."""
    heads, kv = local_heads(shape, tp)
    hs = shape.dim / (tp if sequence_parallel else 1)
    q, k = heads * shape.head_dim, kv * shape.head_dim
    f = shape.ffn_dim / tp
    if fused:
        return 2 * 4 * hs + 2 * 6 * hs + 4 * (q + k) + 6 * f
    return 2 * 36 * hs + 2 * 6 * hs + 20 * (q + k) + 4 * (2 * q + 2 * k) + 10 * f


def elementwise_kernels_per_layer(fused: bool) -> int:
    """Element-wise kernels per layer, forward (backward launches about twice as many)."""
    return 8 if fused else 40


@dataclass(frozen=True)
class LayerCompute:
    """Seconds of one layer on one GPU for one micro-batch, by phase."""

    gemm_fwd_s: float
    gemm_bwd_s: float
    attention_fwd_s: float
    attention_bwd_s: float
    elementwise_fwd_s: float
    grad_accumulation_s: float
    layer_flops_fwd: float
    """GEMM FLOPs of the forward on this GPU (for checks)."""

    @property
    def forward_s(self) -> float:
        return self.gemm_fwd_s + self.attention_fwd_s + self.elementwise_fwd_s

    @property
    def backward_s(self) -> float:
        return self.gemm_bwd_s + self.attention_bwd_s + 2 * self.elementwise_fwd_s + self.grad_accumulation_s


def layer_compute(
    shape: ModelShape, *, seq_len: int, micro_batch: int, tp: int, cp: int, sequence_parallel: bool, dtype: str,
    device: Device, assumptions: Assumptions, accumulating: bool,
) -> LayerCompute:  # fmt: skip
    """The compute of one layer per micro-batch on one GPU (before the straggler stretch)."""
    tokens = micro_batch * seq_len // cp
    gemms = layer_gemms(shape, tokens=tokens, tp=tp)
    gemm_fwd = sum(gemm_time_s(g, device, dtype, assumptions) for g in gemms)
    gemm_bwd = sum(gemm_time_s(b, device, dtype, assumptions) for g in gemms for b in backward_gemms(g))
    attn_fwd, attn_bwd = attention_time_s(
        shape,
        seq_len=seq_len,
        micro_batch=micro_batch,
        tp=tp,
        cp=cp,
        dtype=dtype,
        device=device,
        assumptions=assumptions,
    )
    fused = assumptions.fused_elementwise
    per_token = elementwise_bytes_per_token(shape, tp=tp, sequence_parallel=sequence_parallel, fused=fused)
    if canonical_dtype(dtype) == "float8":
        # quantizing each GEMM input (activations forward, output grads backward): read 2 B, write 1 B
        per_token += 3 * sum(g.k for g in gemms)
    if canonical_dtype(dtype) == "float32":
        per_token *= 2
    bandwidth = (device.memory_tbps or 0) * 1e12 * assumptions.memory_efficiency
    elem = per_token * tokens / bandwidth if bandwidth else 0.0
    elem += elementwise_kernels_per_layer(fused) * assumptions.kernel_gap_s
    grad_acc = 0.0
    if accumulating and not assumptions.fused_grad_accumulation and bandwidth:
        local_params = sum(g.n * g.k for g in gemms)
        grad_acc = 10 * local_params / bandwidth
    scale = device.compute_scale
    return LayerCompute(
        gemm_fwd_s=gemm_fwd * scale, gemm_bwd_s=gemm_bwd * scale, attention_fwd_s=attn_fwd * scale,
        attention_bwd_s=attn_bwd * scale, elementwise_fwd_s=elem * scale, grad_accumulation_s=grad_acc * scale,
        layer_flops_fwd=float(sum(g.flops for g in gemms)),
    )  # fmt: skip
