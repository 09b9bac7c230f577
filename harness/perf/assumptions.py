"""The cost model's documented constants: everything it assumes that is not in the hardware
profile. Each default names its source; docs/projection.md discusses them and which matter.
Change one with `dataclasses.replace(DEFAULT, ...)` for a what-if study."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Assumptions:
    """Constants of the cost model (times in seconds, fractions in [0, 1])."""

    gemm_fixed_s: float = 5e-6
    """Per-GEMM cost beyond FLOPs at the ceiling (launch, pipeline ramp, tail wave): a GEMM of
    F FLOPs takes F / ceiling + this. With 5 µs an H100 1024³ bf16 GEMM runs at about a third of
    its ceiling and 4096³ at 97 %, the shape of mamf-finder sweeps."""
    attention_fwd_vs_gemm: float = 0.75
    """Fused (flash) attention forward TFLOP/s over the device's GEMM ceiling: FA3 and cuDNN reach
    about 600 TFLOP/s forward on H100 at 8K-16K tokens, head dim 128 (Shah et al. 2024, FA3 paper
    figs. 5-6), 0.61 of the peak against MAMF's 0.80."""
    attention_bwd_vs_gemm: float = 0.69
    """The same for the backward: cuDNN 518, FA3 559 TFLOP/s at 8K on H100 (FA3 paper, bwd figure;
    backward FLOPs counted as 2.5× forward, as the FlashAttention benchmarks count them)."""
    attention_half_tokens: int = 256
    """Key length at which attention reaches half its long-sequence rate's headroom: the FA3
    backward curve (316 TFLOP/s at 512 keys, 424 at 1K, 501 at 2K, 559 at 8K) follows
    rate = best · T / (T + 256) within about 10 %."""
    flash_attention: bool = True
    """Attention scores are not stored (SDPA/flash): activations 34·s·b·h per layer, not + 5·a·s²·b."""
    memory_efficiency: float = 0.85
    """Achieved fraction of the HBM bandwidth by element-wise kernels (STREAM-like; the acceptance
    gate memory_triad is 0.80)."""
    kernel_gap_s: float = 2e-6
    """GPU idle time per element-wise kernel launched back to back from eager PyTorch."""
    fused_elementwise: bool = False
    """Norms, RoPE, SwiGLU and residuals as fused kernels (Megatron/TE, torch.compile) instead of
    eager PyTorch's chains of casts and passes."""
    fused_grad_accumulation: bool = False
    """Weight-gradient GEMMs accumulate straight into fp32 main grads (Megatron's
    gradient_accumulation_fusion); otherwise each micro-batch adds bf16 grads into fp32 (10 B/param)."""
    tp_overlap: float = 0.0
    """Fraction of the TP collectives hidden behind GEMMs (TE userbuffers, async TP); 0: serial, as
    in plain DTensor TP and, as far as published, Llama 3."""
    cp_overlap: float = 0.0
    """Fraction of the CP all-gather of K and V hidden (Llama 3: exposed, small at long sequences)."""
    pp_p2p_overlap: float = 0.5
    """Fraction of the steady-state pipeline sends hidden behind compute: async send/recv frees the
    sender, but the receiver of the next chunk waits for part of the transfer (Llama 3 §3.3.2)."""
    dp_overlap: float = 0.9
    """Most of the FSDP all-gather / reduce-scatter that hides behind the first forward and the
    last backward of a step, when that compute is long enough; the rest (first layer's gather, last
    layer's reduce, NCCL taking SMs) stays exposed."""
    fsdp_reshard_after_forward: bool = True
    """Without PP, FSDP frees each layer's gathered weights after its forward and gathers them again
    for the backward (FSDP2's default, ZeRO-3); with PP the stage keeps them for the whole step (as
    torchtitan and torch.distributed.pipelining do), gathering once and reducing once per step."""
    grad_reduce_bytes: int = 4
    """Bytes per gradient element in the data-parallel reduce-scatter: fp32, as torchtitan's default
    mixed-precision policy and Llama 3 (§3.3.4: reduce-scatter gradients in FP32)."""
    gpu_speed_sigma: float = 0.0175
    """Relative standard deviation of GPU speed across a cluster. Synchronous training runs at the
    pace of its slowest GPU: compute is stretched by 1 + σ·z(N), z(N) the expected maximum of N
    standard normals. 1.75 %: the ≥ 5 % spread of 8 GPUs of a node (REFERENCE §2) is about 2.85 σ."""
    optimizer_bytes_per_param: int = 40
    """HBM traffic of one AdamW step per local parameter (read fp32 param, grad, m, v; write param,
    m, v, bf16 copy), at memory bandwidth."""


DEFAULT = Assumptions()
