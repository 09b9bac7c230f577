"""The memory a training run needs per device, from the shape alone.

Model states (ZeRO paper, Rajbhandari et al. 2020), Ψ parameters, AdamW: 16-bit training keeps
2Ψ weights, 2Ψ gradients and 12Ψ optimizer states (fp32 master weights, momentum, variance);
fp32 training 4Ψ + 4Ψ + 8Ψ: 16 bytes per parameter either way. ZeRO-1 shards the optimizer
states, ZeRO-2 also the gradients, ZeRO-3 (and FSDP) also the weights.

Activations per layer and micro-batch (Korthikanti et al. 2022, "Reducing activation
recomputation"), 16-bit, bytes: s·b·h·(34 + 5·a·s/h), or 34·s·b·h when the attention scores are
not stored (SDPA/flash, our default); twice that in fp32. Tensor parallelism with sequence
parallelism divides all of it by t (without SP: s·b·h·(10 + 24/t)); context parallelism divides
the sequence by cp. Full recompute keeps only each layer's input, 2·s·b·h (divided by t under
SP), plus one layer's full set while it is recomputed.

Per layout (`layout_memory`): each pipeline stage holds its layers (the first also the token
embedding, the last the output head and the fp32 logits with their gradient, s·b·V/t × 4 × 2
bytes); 1F1B keeps up to p − stage micro-batches in flight, GPipe all m, interleaved 1F1B about
p·(1 + (p−1)/(p·v)) on the first stage. The report is the worst stage's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.perf.device import canonical_dtype
from harness.perf.layout import Layout, stage_layers, valid_tp
from harness.perf.shape import ModelShape, layer_params, param_count
from harness.perf.workload import Workload

GIB = 2**30
USABLE_FRACTION = 0.9
"""A plan fits when it needs at most this fraction of the device memory (allocator
fragmentation, CUDA context, NCCL buffers, the rest)."""
CHECKPOINT_BYTES_PER_PARAM = 12
"""A checkpoint holds fp32 weights and AdamW's two fp32 moments: 12 bytes per parameter, as
torch.distributed.checkpoint saves FSDP2's sharded fp32 parameters and optimizer state. The bf16
compute copy is derived from the fp32 weights and not saved (DeepSpeed, which also saves its bf16
module weights, needs 14)."""


def _half(dtype: str) -> bool:
    return canonical_dtype(dtype) in ("bfloat16", "float16", "float8")


def state_bytes_per_param(dtype: str) -> tuple[int, int, int]:
    """(weights, gradients, optimizer) bytes per parameter with AdamW: 2 + 2 + 12 in mixed
    precision (bf16 copies, fp32 master + m + v), 4 + 4 + 8 in fp32."""
    return (2, 2, 12) if _half(dtype) else (4, 4, 8)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device (the ZeRO-stage plan of data-parallel training)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    device_capacity_bytes: int | None = None
    """The device's memory when known (memory_gib × 2³⁰)."""

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def fits(self) -> bool | None:
        """Whether the total is at most 0.9 of the device's memory; None when that is unknown."""
        if self.device_capacity_bytes is None:
            return None
        return self.total <= USABLE_FRACTION * self.device_capacity_bytes


def memory_plan(
    shape: ModelShape, *, dtype: str, zero_stage: int, dp_size: int, micro_batch: int, seq_len: int,
    activation_checkpointing: bool = False, memory_gib: float | None = None,
) -> MemoryPlan:  # fmt: skip
    """The memory estimate per device for this ZeRO stage (FSDP: stage 3, DDP: stage 0).
    `memory_gib` (the profile's) makes the plan say whether it fits."""
    psi = param_count(shape).total
    half = _half(dtype)
    w, g, o = state_bytes_per_param(dtype)
    weights, grads, optim = w * psi, g * psi, o * psi
    if zero_stage >= 1:
        optim //= dp_size
    if zero_stage >= 2:
        grads //= dp_size
    if zero_stage >= 3:
        weights //= dp_size
    sbh = seq_len * micro_batch * shape.dim
    per_layer = 34 * sbh * (1 if half else 2)
    if activation_checkpointing:
        activations = shape.n_layers * 2 * sbh * (1 if half else 2) + per_layer
    else:
        activations = shape.n_layers * per_layer
    capacity = int(memory_gib * GIB) if memory_gib else None
    return MemoryPlan(weights, grads, optim, activations, capacity)


def activation_bytes_per_layer(
    shape: ModelShape, *, seq_len: int, micro_batch: int, tp: int = 1, cp: int = 1, sequence_parallel: bool = False,
    dtype: str = "bfloat16", recompute: bool = False, flash_attention: bool = True,
) -> float:  # fmt: skip
    """Bytes one layer keeps per micro-batch on one GPU for its backward (Korthikanti et al. 2022)."""
    tokens = micro_batch * seq_len / cp
    h = shape.dim
    scale = 1 if _half(dtype) else 2
    if recompute:
        return 2 * tokens * h * scale / (tp if sequence_parallel else 1)
    scores = 0.0 if flash_attention else 5 * shape.n_heads * seq_len / h
    if tp > 1 and not sequence_parallel:
        return tokens * h * (10 + 24 / tp + scores / tp) * scale
    return tokens * h * (34 + scores) * scale / tp


def in_flight_microbatches(layout: Layout, stage: int = 0) -> float:
    """Micro-batches whose activations a pipeline stage holds at its peak."""
    p, m = layout.pp, layout.pp_microbatches or 1
    if p <= 1:
        return 1.0
    if layout.pp_schedule == "gpipe":
        return float(m)
    if layout.pp_schedule == "interleaved_1f1b":
        v = layout.pp_virtual_stages or 1
        return min(float(m), (p - stage) * (1 + (p - 1) / (p * v)))
    return float(min(m, p - stage))


@dataclass(frozen=True)
class MemoryReport:
    """Bytes per device on the worst pipeline stage, by term, and whether it fits."""

    weights_bytes: int
    """Sharded weights (bf16 in mixed precision)."""
    gradients_bytes: int
    optimizer_bytes: int
    """fp32 master weights and AdamW moments (mixed precision), sharded over dp_shard."""
    working_weights_bytes: int
    """Unsharded weights FSDP gathers for compute: the whole stage under PP (not resharded after the
    forward, as torchtitan does with PP), else two layers (the one computing and the prefetched)."""
    activations_bytes: int
    logits_bytes: int
    total_bytes: int
    device_capacity_bytes: int | None
    usable_bytes: int | None
    fits: bool | None
    stage: int
    """The pipeline stage that needs the most."""
    in_flight_microbatches: float
    checkpoint_bytes: int
    """The whole model and optimizer state on disk (12 bytes per parameter)."""
    advice: tuple[str, ...] = ()

    @property
    def largest_terms(self) -> list[tuple[str, int]]:
        """The terms, largest first (zero terms left out)."""
        terms = [
            ("activations", self.activations_bytes), ("optimizer", self.optimizer_bytes),
            ("working_weights", self.working_weights_bytes), ("weights", self.weights_bytes),
            ("gradients", self.gradients_bytes), ("logits", self.logits_bytes),
        ]  # fmt: skip
        return sorted(((n, b) for n, b in terms if b), key=lambda t: -t[1])

    def to_row(self) -> dict[str, object]:
        """Fields for a train_plan or projection row."""
        return {
            "memory_per_device_bytes": self.total_bytes, "memory_weights_bytes": self.weights_bytes,
            "memory_gradients_bytes": self.gradients_bytes, "memory_optimizer_bytes": self.optimizer_bytes,
            "memory_working_weights_bytes": self.working_weights_bytes,
            "memory_activations_bytes": self.activations_bytes, "memory_logits_bytes": self.logits_bytes,
            "device_capacity_bytes": self.device_capacity_bytes, "fits": self.fits,
            "memory_largest_terms": [name for name, _ in self.largest_terms[:3]],
            "checkpoint_bytes": self.checkpoint_bytes, "memory_advice": list(self.advice),
        }  # fmt: skip


def _stage_total(
    shape: ModelShape, layout: Layout, workload: Workload, stage: int, layers: int, *, flash_attention: bool,
) -> dict[str, float]:  # fmt: skip
    tp, pp, shard = layout.tp, layout.pp, layout.dp_shard
    counts = param_count(shape)
    params = layers * layer_params(shape)
    if stage == 0:
        params += counts.embedding
    if stage == pp - 1 and (not shape.tied_embeddings or pp > 1):
        params += shape.vocab_size * shape.dim
    params = params / tp
    w, g, o = state_bytes_per_param(workload.dtype)
    terms: dict[str, float] = {"weights": w * params / shard, "gradients": g * params / shard,
                               "optimizer": o * params / shard}  # fmt: skip
    if shard > 1:
        working = params if pp > 1 else min(params, 2 * layer_params(shape) / tp)
        terms["working_weights"] = (w * working if pp > 1 else (w + g) * working) * (1 - 1 / shard)
    else:
        terms["working_weights"] = 0.0
    recompute = workload.activation_checkpointing
    per_layer = activation_bytes_per_layer(
        shape, seq_len=workload.seq_len, micro_batch=workload.micro_batch, tp=tp, cp=layout.cp,
        sequence_parallel=bool(layout.sequence_parallel), dtype=workload.dtype, recompute=recompute,
        flash_attention=flash_attention,
    )  # fmt: skip
    flight = in_flight_microbatches(layout, stage)
    activations = flight * layers * per_layer
    if recompute and layers:
        activations += activation_bytes_per_layer(
            shape, seq_len=workload.seq_len, micro_batch=workload.micro_batch, tp=tp, cp=layout.cp,
            sequence_parallel=bool(layout.sequence_parallel), dtype=workload.dtype, flash_attention=flash_attention,
        )  # fmt: skip
    terms["activations"] = activations
    tokens = workload.micro_batch * workload.seq_len / layout.cp
    terms["logits"] = tokens * shape.vocab_size / tp * 4 * 2 if stage == pp - 1 else 0.0
    terms["in_flight"] = flight
    return terms


def _worst(
    shape: ModelShape, layout: Layout, workload: Workload, flash_attention: bool
) -> tuple[int, dict[str, float]]:
    counts = stage_layers(shape.n_layers, layout.pp)
    candidates = {0, layout.pp - 1} | {i for i, c in enumerate(counts) if c == max(counts)}
    best: tuple[int, dict[str, float]] | None = None
    for stage in sorted(candidates):
        terms = _stage_total(shape, layout, workload, stage, counts[stage], flash_attention=flash_attention)
        total = sum(v for k, v in terms.items() if k != "in_flight")
        if best is None or total > sum(v for k, v in best[1].items() if k != "in_flight"):
            best = (stage, terms)
    assert best is not None
    return best


def _total(shape: ModelShape, layout: Layout, workload: Workload, flash_attention: bool) -> float:
    _, terms = _worst(shape, layout, workload, flash_attention)
    return sum(v for k, v in terms.items() if k != "in_flight")


def layout_memory(
    shape: ModelShape, layout: Layout, workload: Workload, *, memory_gib: float | None,
    gpus_per_node: int = 8, flash_attention: bool = True, advise: bool = True,
) -> MemoryReport:  # fmt: skip
    """The memory per device of a resolved layout (its worst pipeline stage), whether it fits in
    0.9 × memory_gib, and what to change when it does not."""
    stage, terms = _worst(shape, layout, workload, flash_attention)
    total = int(sum(v for k, v in terms.items() if k != "in_flight"))
    capacity = int(memory_gib * GIB) if memory_gib else None
    usable = int(USABLE_FRACTION * capacity) if capacity else None
    fits = None if usable is None else total <= usable
    advice: tuple[str, ...] = ()
    if fits is False and advise:
        advice = tuple(_advice(shape, layout, workload, usable or 0, gpus_per_node, flash_attention))
    return MemoryReport(
        weights_bytes=int(terms["weights"]), gradients_bytes=int(terms["gradients"]),
        optimizer_bytes=int(terms["optimizer"]), working_weights_bytes=int(terms["working_weights"]),
        activations_bytes=int(terms["activations"]), logits_bytes=int(terms["logits"]), total_bytes=total,
        device_capacity_bytes=capacity, usable_bytes=usable, fits=fits, stage=stage,
        in_flight_microbatches=terms["in_flight"],
        checkpoint_bytes=CHECKPOINT_BYTES_PER_PARAM * param_count(shape).total, advice=advice,
    )  # fmt: skip


def _regroup(layout: Layout, workload: Workload, **degrees: int) -> Layout | None:
    """The layout with some degrees changed at the same world size (dp_shard absorbs the change)."""
    old = layout.tp * layout.pp * layout.cp
    new = degrees.get("tp", layout.tp) * degrees.get("pp", layout.pp) * degrees.get("cp", layout.cp)
    if (layout.dp_shard * old) % new:
        return None
    shard = layout.dp_shard * old // new
    dp = shard * layout.dp_replicate
    if workload.global_batch % (dp * workload.micro_batch):
        return None
    m = workload.global_batch // (dp * workload.micro_batch)
    return dataclasses.replace(layout, dp_shard=shard, pp_microbatches=m, **degrees)


def _advice(
    shape: ModelShape, layout: Layout, workload: Workload, usable: int, gpus_per_node: int, flash: bool,
) -> list[str]:  # fmt: skip
    """What to change, each with the memory it would give (GiB per device)."""
    tips: list[str] = []
    now = _total(shape, layout, workload, flash)

    def note(text: str, lay: Layout | None, work: Workload) -> None:
        if lay is None:
            return
        total = _total(shape, lay, work, flash)
        if total >= now:
            return  # e.g. a deeper 1F1B pipeline keeps more micro-batches in flight on its first stage
        verdict = "fits" if total <= usable else "still too much"
        tips.append(f"{text} ({total / GIB:,.1f} GiB per device, {verdict})")

    if not workload.activation_checkpointing:
        note("turn on train.activation_checkpointing", layout, dataclasses.replace(workload,
             activation_checkpointing=True))  # fmt: skip
    tps = [t for t in valid_tp(shape, gpus_per_node) if t > layout.tp]
    if tps:
        note(
            f"raise parallel.tp to {tps[-1]}", _regroup(layout, workload, tp=tps[-1], sequence_parallel=True), workload
        )
    if shape.n_layers >= 2 * layout.pp * (layout.pp_virtual_stages or 1):
        note(f"raise parallel.pp to {2 * layout.pp}", _regroup(layout, workload, pp=2 * layout.pp), workload)
    if workload.seq_len >= 16384 and workload.seq_len % (4 * layout.cp) == 0:
        note(f"raise parallel.cp to {2 * layout.cp}", _regroup(layout, workload, cp=2 * layout.cp), workload)
    if workload.micro_batch > 1:
        note("lower train.micro_batch to 1", layout, dataclasses.replace(workload, micro_batch=1))
    if layout.dp_replicate > 1:
        note("shard instead of replicating: parallel.dp_replicate=1",
             dataclasses.replace(layout, dp_shard=layout.dp, dp_replicate=1), workload)  # fmt: skip
    return tips
