"""The time of one training step of a layout on a cluster, and its breakdown.

Per micro-batch, the busiest pipeline stage runs its layers' forward and backward (`compute`),
with the TP collectives of each layer (`comm.tp_collectives`) and, under CP, the all-gather of K
and V and the reduce-scatter of their gradients. The pipeline runs m micro-batches plus the
schedule's warm-up and drain, (p−1)/v stage-times of idle (the bubble), and sends activations
between stages (the part not hidden behind compute is `pp_p2p_s`). Data parallelism gathers the
weights and reduce-scatters the gradients once per step; the part the first forward and the last
backward cannot hide is `dp_comm_exposed_s`. The optimizer step runs at memory bandwidth.

Synchronous training runs at the pace of its slowest GPU: compute is stretched by 1 + σ·z(N)
(see Assumptions.gpu_speed_sigma).

FLOP/s are reported in the harness's convention (6N' + 12LHQT, `tflops_per_device`), in the causal
one (6N' + 6LHQT, `tflops_per_device_causal`) and as hardware FLOPs (recompute counted,
`hw_tflops_per_device`); MFU and HFU are over the peak of the dtype used.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist

from harness.perf import comm
from harness.perf.assumptions import DEFAULT, Assumptions
from harness.perf.compute import backward_gemms, gemm_time_s, head_gemm, layer_compute, local_heads
from harness.perf.device import Device, canonical_dtype
from harness.perf.layout import Layout, dim_stride, layout_notes, stage_layers
from harness.perf.memory import MemoryReport, layout_memory
from harness.perf.shape import ModelShape, flops_per_token, layer_params, param_count
from harness.perf.workload import Workload

BREAKDOWN = ("compute_s", "tp_comm_s", "cp_comm_s", "pp_bubble_s", "pp_p2p_s", "dp_comm_exposed_s", "optimizer_s")
"""The parts of a step, in the order the stacked plot draws them; they add up to step_time_s."""


@dataclass(frozen=True)
class StepEstimate:
    """One training step of a layout, projected."""

    gpus: int
    layout: Layout
    workload: Workload
    step_time_s: float
    tokens_per_s: float
    tflops_per_device: float
    """Model FLOPs 6N' + 12LHQT (non-causal, the harness's convention) per second per GPU, in 1e12."""
    tflops_per_device_causal: float
    """Model FLOPs with the causal attention term halved (6N' + 6LHQT), as current Megatron-LM counts."""
    hw_tflops_per_device: float
    """Hardware FLOPs: recompute counted (8N' + 16LHQT with activation checkpointing)."""
    mfu: float | None
    mfu_causal: float | None
    hfu: float | None
    peak_tflops: float | None
    compute_s: float
    tp_comm_s: float
    cp_comm_s: float
    pp_bubble_s: float
    pp_p2p_s: float
    dp_comm_exposed_s: float
    optimizer_s: float
    bubble_fraction: float
    straggler_factor: float
    memory: MemoryReport
    notes: tuple[str, ...] = field(default_factory=tuple)
    """What the layout implies (KV heads replicated, uneven stages)."""

    @property
    def fits(self) -> bool | None:
        return self.memory.fits

    @property
    def aggregate_pflops(self) -> float:
        """Sustained model FLOP/s of all GPUs, 1e15 (harness convention)."""
        return self.tflops_per_device * self.gpus / 1e3

    def breakdown(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in BREAKDOWN}


def straggler_factor(gpus: int, sigma: float) -> float:
    """1 + σ·z(N): the expected slowdown of the slowest of N GPUs whose speeds spread with relative
    standard deviation σ (z from Blom's approximation of the expected maximum of N normals)."""
    if gpus <= 1 or sigma <= 0:
        return 1.0
    return 1.0 + sigma * NormalDist().inv_cdf((gpus - 0.375) / (gpus + 0.25))


@lru_cache(maxsize=4096)
def _layer(
    shape: ModelShape, seq_len: int, micro_batch: int, tp: int, cp: int, sp: bool, dtype: str, device: Device,
    assumptions: Assumptions, accumulating: bool,
):  # fmt: skip
    return layer_compute(shape, seq_len=seq_len, micro_batch=micro_batch, tp=tp, cp=cp, sequence_parallel=sp,
                         dtype=dtype, device=device, assumptions=assumptions, accumulating=accumulating)  # fmt: skip


def _tp_time(
    shape: ModelShape, layout: Layout, workload: Workload, device: Device, a: Assumptions, gpus_per_node: int,
    backward_compute_s: float,
) -> float:  # fmt: skip
    """Exposed TP seconds of one layer per micro-batch."""
    if layout.tp <= 1:
        return 0.0
    tokens = workload.micro_batch * workload.seq_len // layout.cp
    span = comm.group_span(layout.tp, 1, _domain(device, gpus_per_node))
    exposed = hidden = 0.0
    for c in comm.tp_collectives(dim=shape.dim, tokens=tokens, tp=layout.tp,
                                 sequence_parallel=bool(layout.sequence_parallel),
                                 recompute=workload.activation_checkpointing,
                                 activation_bytes=workload.activation_bytes):  # fmt: skip
        t = comm.collective_time_s(c.op, c.nbytes, span, device)
        if c.overlappable:
            hidden += t
        else:
            exposed += t
    # Megatron's re-gather runs beside the input-gradient GEMM: only what outlasts it shows
    exposed += max(0.0, hidden - backward_compute_s / 2)
    return exposed * (1 - a.tp_overlap)


def _domain(device: Device, gpus_per_node: int) -> int:
    return max(device.nvlink_domain, gpus_per_node) if device.nvlink_domain else gpus_per_node


def _cp_time(shape: ModelShape, layout: Layout, workload: Workload, device: Device, a: Assumptions,
             gpus_per_node: int) -> float:  # fmt: skip
    if layout.cp <= 1:
        return 0.0
    _, kv = local_heads(shape, layout.tp)
    size = comm.cp_kv_bytes(seq_len=workload.seq_len, micro_batch=workload.micro_batch, kv_heads_local=kv,
                            head_dim=shape.head_dim, element_bytes=workload.activation_bytes)  # fmt: skip
    span = comm.group_span(layout.cp, dim_stride(layout, "cp"), _domain(device, gpus_per_node))
    gather = comm.collective_time_s("all_gather", size, span, device)
    reduce = comm.collective_time_s("reduce_scatter", size, span, device)
    total = gather * (2 if workload.activation_checkpointing else 1) + reduce
    return total * (1 - a.cp_overlap)


def _dp_times(
    shape: ModelShape, layout: Layout, workload: Workload, device: Device, a: Assumptions, gpus_per_node: int,
    unit_params: list[float], fwd_window_s: float, bwd_window_s: float,
) -> float:  # fmt: skip
    """Exposed data-parallel seconds per step. FSDP gathers and reduces per unit (each transformer
    block, the embedding, the output head), each collective paying its own latency. With PP:
    weights gathered before the first forward, gradients reduce-scattered (or all-reduced) after
    the last backward, each hidden up to dp_overlap behind that micro-batch's compute. Without PP,
    FSDP does this every micro-batch."""
    if layout.dp <= 1:
        return 0.0
    domain = _domain(device, gpus_per_node)
    stride = dim_stride(layout, "dp_shard")
    weight_element = 4 if workload.dtype == "float32" else 2
    grad_element = 4 if workload.dtype == "float32" else a.grad_reduce_bytes
    gather = reduce = 0.0
    shard_span = comm.group_span(layout.dp_shard, stride, domain)
    replicate_span = comm.group_span(layout.dp_replicate, stride * layout.dp_shard, domain)
    for params, count in Counter(unit_params).items():  # the blocks are alike: cost one, count them
        local = params / layout.tp
        if layout.dp_shard > 1:
            gather += count * comm.collective_time_s("all_gather", local * weight_element, shard_span, device)
            reduce += count * comm.collective_time_s("reduce_scatter", local * grad_element, shard_span, device)
        if layout.dp_replicate > 1:
            reduce += count * comm.collective_time_s("all_reduce", local * grad_element / layout.dp_shard,
                                                     replicate_span, device)  # fmt: skip

    def exposed(t: float, window: float) -> float:
        return max(t * (1 - a.dp_overlap), t - window * a.dp_overlap)

    if layout.pp > 1 or layout.dp_shard <= 1:
        return exposed(gather, fwd_window_s) + exposed(reduce, bwd_window_s)
    # FSDP without PP: every micro-batch gathers the weights for its forward (and again for its
    # backward when they were freed) and reduce-scatters its gradients
    m = layout.pp_microbatches or 1
    regather = gather if a.fsdp_reshard_after_forward else 0.0
    return m * (exposed(gather, fwd_window_s) + exposed(regather + reduce, bwd_window_s))


def _warmup_steps(lay: Layout, stage_layers: int, v: int) -> float:
    """The pipeline's warm-up and drain in micro-batch steps of the busiest stage: pp − 1 (1F1B,
    GPipe), or (pp − 1)/v interleaved (Narayanan et al. 2021), where a chunk is 1/v of a stage. A
    stage whose layers do not split evenly into v chunks has chunks of ⌈layers/v⌉ layers, and the
    largest sets the pace: (pp − 1)·⌈layers/v⌉/layers."""
    if lay.pp <= 1:
        return 0.0
    if lay.pp_schedule != "interleaved_1f1b" or stage_layers <= 0:
        return float(lay.pp - 1)
    return (lay.pp - 1) * math.ceil(stage_layers / v) / stage_layers


def estimate_step(
    shape: ModelShape, layout: Layout, workload: Workload, device: Device, *, gpus_per_node: int = 8,
    assumptions: Assumptions = DEFAULT, advise: bool = True,
) -> StepEstimate:  # fmt: skip
    """Project one training step of a resolved layout (see `Layout.resolve`). The harness's layout
    rules are `validate_layout`'s; this only needs the degrees to multiply to the GPU count it
    reports, so that layouts the harness would refuse (Llama 3's 128 chunks for 126 layers) can
    still be costed. `advise=False` skips the memory advice (the planner's inner loop)."""
    a = assumptions
    lay = layout
    if lay.dp_shard < 1 or lay.pp_microbatches is None or lay.sequence_parallel is None:
        raise ValueError(f"estimate_step needs a resolved layout (Layout.resolve), got {lay}")
    gpus = lay.world_size
    dtype = canonical_dtype(workload.dtype)
    sp = bool(lay.sequence_parallel)
    m = lay.pp_microbatches or 1
    v = (lay.pp_virtual_stages or 1) if lay.pp_schedule == "interleaved_1f1b" else 1
    recompute = workload.activation_checkpointing
    stretch = straggler_factor(gpus, a.gpu_speed_sigma)
    accumulating = m > 1
    layer = _layer(shape, workload.seq_len, workload.micro_batch, lay.tp, lay.cp, sp, dtype, device, a, accumulating)
    layer_fwd = layer.forward_s * stretch
    layer_bwd = layer.backward_s * stretch + (layer_fwd if recompute else 0.0)
    tp_layer = _tp_time(shape, lay, workload, device, a, gpus_per_node, layer.backward_s)
    cp_layer = _cp_time(shape, lay, workload, device, a, gpus_per_node)

    # the output head and loss on the last stage; the embedding lookup on the first is negligible
    tokens = workload.micro_batch * workload.seq_len // lay.cp
    head = head_gemm(shape, tokens=tokens, tp=lay.tp)
    head_time = sum(gemm_time_s(g, device, dtype, a) for g in (head, *backward_gemms(head))) * device.compute_scale
    bandwidth = (device.memory_tbps or 0) * 1e12 * a.memory_efficiency
    loss = (head.m * head.n * 4 * 6 / bandwidth) if bandwidth else 0.0  # fp32 logits: softmax, loss, grad
    head_s = (head_time + loss) * stretch

    counts = stage_layers(shape.n_layers, lay.pp)
    per_layer = layer_fwd + layer_bwd
    stage_compute = [c * per_layer + (head_s if i == lay.pp - 1 else 0.0) for i, c in enumerate(counts)]
    busiest = max(range(lay.pp), key=lambda i: stage_compute[i])
    tau_compute = stage_compute[busiest]
    tau_tp = counts[busiest] * tp_layer
    tau_cp = counts[busiest] * cp_layer
    tau = tau_compute + tau_tp + tau_cp

    compute_s = m * tau_compute
    tp_comm_s = m * tau_tp
    cp_comm_s = m * tau_cp
    pp_bubble_s = pp_p2p_s = 0.0
    warm = _warmup_steps(lay, counts[busiest], v)
    if lay.pp > 1:
        pp_bubble_s = warm * tau
        p2p_bytes = comm.pp_activation_bytes(tokens=tokens, dim=shape.dim, tp=lay.tp, sequence_parallel=sp,
                                             element_bytes=workload.activation_bytes)  # fmt: skip
        same = dim_stride(lay, "pp") < _domain(device, gpus_per_node)
        hop = comm.p2p_time_s(p2p_bytes, same_domain=same, device=device)
        pp_p2p_s = m * 2 * v * hop * (1 - a.pp_p2p_overlap) + 2 * (lay.pp - 1) * hop

    stage_params = counts[busiest] * layer_params(shape)
    if busiest == lay.pp - 1:
        stage_params += shape.vocab_size * shape.dim
    if busiest == 0:
        stage_params += param_count(shape).embedding
    fwd_window = counts[busiest] * layer_fwd
    bwd_window = counts[busiest] * layer_bwd
    units = [float(layer_params(shape))] * counts[busiest]
    units += [float(shape.vocab_size * shape.dim)] * ((busiest == lay.pp - 1) + (busiest == 0))
    dp_comm_exposed_s = _dp_times(shape, lay, workload, device, a, gpus_per_node, units, fwd_window,
                                  bwd_window)  # fmt: skip
    optimizer_s = 0.0
    if bandwidth:
        optimizer_s = a.optimizer_bytes_per_param * stage_params / lay.tp / lay.dp_shard / bandwidth
    step = compute_s + tp_comm_s + cp_comm_s + pp_bubble_s + pp_p2p_s + dp_comm_exposed_s + optimizer_s

    tokens_per_s = workload.tokens_per_step / step
    per_gpu = tokens_per_s / gpus
    model = flops_per_token(shape, workload.seq_len) * per_gpu / 1e12
    causal = flops_per_token(shape, workload.seq_len, causal=True) * per_gpu / 1e12
    hardware = flops_per_token(shape, workload.seq_len, recompute=recompute) * per_gpu / 1e12
    peak = device.peak(dtype)
    memory = layout_memory(shape, lay, workload, memory_gib=device.memory_gib, gpus_per_node=gpus_per_node,
                           flash_attention=a.flash_attention, advise=advise)  # fmt: skip
    return StepEstimate(
        gpus=gpus, layout=lay, workload=workload, step_time_s=step, tokens_per_s=tokens_per_s,
        tflops_per_device=model, tflops_per_device_causal=causal, hw_tflops_per_device=hardware,
        mfu=model / peak if peak else None, mfu_causal=causal / peak if peak else None,
        hfu=hardware / peak if peak else None, peak_tflops=peak,
        compute_s=compute_s, tp_comm_s=tp_comm_s, cp_comm_s=cp_comm_s, pp_bubble_s=pp_bubble_s, pp_p2p_s=pp_p2p_s,
        dp_comm_exposed_s=dp_comm_exposed_s, optimizer_s=optimizer_s, bubble_fraction=warm / (m + warm),
        straggler_factor=stretch, memory=memory, notes=tuple(layout_notes(lay, shape)),
    )  # fmt: skip
