"""A parallel layout: the degrees of data (replicated and sharded), tensor, pipeline and context
parallelism, the pipeline schedule, its checks and its device mesh (issue 13).

Mesh order, innermost first: TP (node-local ranks), then CP, then DP shard, then DP replicate,
with PP outermost, as torchtitan (`["pp", "dp_replicate", "dp_shard", "cp", "tp"]`, outermost
first) and Megatron-LM order their meshes. A global rank is therefore

    rank = (((pp·R + replicate)·S + shard)·C + cp)·T + tp

and the training code, the manifest and the cost model use the one function below for it.

Pipeline bubble as a fraction of the step (Narayanan et al. 2021): (p−1)/(m+p−1) for 1F1B and
GPipe, (p−1)/(v·m+p−1) for the interleaved 1F1B schedule with v virtual stages per rank.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from harness.errors import ConfigError
from harness.perf.shape import ModelShape

PP_SCHEDULES = ("1f1b", "gpipe", "interleaved_1f1b")
MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")
"""The mesh dimensions, outermost first (torch DeviceMesh order)."""


@dataclass(frozen=True)
class Layout:
    """Degrees of parallelism (config section `parallel`); `resolve` fills the defaults."""

    dp_replicate: int = 1
    """HSDP replicas (gradients all-reduced across them)."""
    dp_shard: int = -1
    """FSDP degree; -1: what the world size leaves."""
    tp: int = 1
    """Tensor parallelism (Megatron column/row split), inside a node."""
    pp: int = 1
    """Pipeline stages."""
    cp: int = 1
    """Context parallelism (Llama 3's all-gather of K and V; sequence cut into 2·cp chunks)."""
    pp_schedule: str = "1f1b"
    """1f1b, gpipe or interleaved_1f1b."""
    pp_microbatches: int | None = None
    """Micro-batches per pipeline per step; default: global batch / (dp × micro-batch)."""
    pp_virtual_stages: int | None = None
    """Model chunks per pipeline rank; default 1, 2 for interleaved_1f1b."""
    sequence_parallel: bool | None = None
    """Norms and residuals sharded along the sequence over TP (Korthikanti et al.); default tp > 1."""

    @property
    def dp(self) -> int:
        """Data-parallel degree: replicas × shards (after `resolve`)."""
        return self.dp_replicate * self.dp_shard

    @property
    def world_size(self) -> int:
        return self.dp_replicate * self.dp_shard * self.tp * self.pp * self.cp

    @property
    def model_parallel(self) -> int:
        """GPUs that hold one copy of the model: tp × cp × pp."""
        return self.tp * self.cp * self.pp

    def resolve(self, world_size: int, *, global_batch: int | None = None, micro_batch: int = 1) -> Layout:
        """The layout with every default filled. `global_batch` is in sequences; without it the
        pipeline gets pp micro-batches (one per stage). Raises ConfigError when dp_shard=-1 leaves
        a fraction; the other rules are `validate_layout`'s."""
        check_degrees(self)
        fixed = self.dp_replicate * self.tp * self.pp * self.cp
        dp_shard = self.dp_shard
        if dp_shard == -1:
            if world_size % fixed:
                lower, upper = (world_size // fixed) * fixed, (world_size // fixed + 1) * fixed
                raise ConfigError(
                    f"parallel.dp_shard=-1 (what is left): {world_size:,} GPUs / (dp_replicate {self.dp_replicate} × "
                    f"tp {self.tp} × pp {self.pp} × cp {self.cp} = {fixed:,}) = {world_size / fixed:.6g} is not whole; "
                    f"use a multiple of {fixed:,} GPUs (e.g. {lower:,} or {upper:,})"
                )
            dp_shard = world_size // fixed
        v = self.pp_virtual_stages or (2 if self.pp_schedule == "interleaved_1f1b" else 1)
        m = self.pp_microbatches
        if m is None:
            dp = self.dp_replicate * dp_shard
            if global_batch is not None and dp * micro_batch and global_batch % (dp * micro_batch) == 0:
                m = global_batch // (dp * micro_batch)
            elif global_batch is not None:
                m = max(1, global_batch // max(1, dp * micro_batch))  # validate_layout names the remainder
            else:
                m = self.pp
        sp = self.sequence_parallel if self.sequence_parallel is not None else self.tp > 1
        return dataclasses.replace(
            self, dp_shard=dp_shard, pp_virtual_stages=v, pp_microbatches=m, sequence_parallel=bool(sp)
        )

    def to_row(self) -> dict[str, object]:
        """The layout's fields as a result row uses them."""
        return {
            "tp": self.tp, "pp": self.pp, "cp": self.cp, "dp_shard": self.dp_shard, "dp_replicate": self.dp_replicate,
            "pp_schedule": self.pp_schedule, "pp_virtual_stages": self.pp_virtual_stages,
            "pp_microbatches": self.pp_microbatches, "sequence_parallel": self.sequence_parallel,
        }  # fmt: skip

    def describe(self) -> str:
        """'TP 8 × PP 16 (interleaved_1f1b, v 2, m 16) × DP 128' — the non-trivial degrees."""
        parts = [f"{name} {value}" for name, value in (("TP", self.tp), ("CP", self.cp)) if value > 1]
        if self.pp > 1:
            v = f", v {self.pp_virtual_stages}" if (self.pp_virtual_stages or 1) > 1 else ""
            parts.append(f"PP {self.pp} ({self.pp_schedule}{v}, m {self.pp_microbatches})")
        if self.dp_replicate > 1:
            parts.append(f"DP {self.dp_replicate}×{self.dp_shard} (replicate×shard)")
        else:
            parts.append(f"DP {self.dp_shard}")
        return " × ".join(parts)


def check_degrees(layout: Layout) -> None:
    """ConfigError (one line) for a degree that is not a whole number ≥ 1 (dp_shard: or -1), an
    unknown schedule, or micro-batches or virtual stages below 1."""
    for name in ("dp_replicate", "tp", "pp", "cp"):
        value = getattr(layout, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"parallel.{name}={value!r}: must be a whole number ≥ 1")
    if not isinstance(layout.dp_shard, int) or (layout.dp_shard < 1 and layout.dp_shard != -1):
        raise ConfigError(f"parallel.dp_shard={layout.dp_shard!r}: must be -1 (what is left) or a whole number ≥ 1")
    if layout.pp_schedule not in PP_SCHEDULES:
        raise ConfigError(f"parallel.pp_schedule={layout.pp_schedule!r}: choose one of {', '.join(PP_SCHEDULES)}")
    for name in ("pp_microbatches", "pp_virtual_stages"):
        value = getattr(layout, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"parallel.{name}={value!r}: must be a whole number ≥ 1")


def divisors(n: int, limit: int | None = None) -> list[int]:
    """The divisors of n ≥ 1 (up to `limit`), ascending, in O(√n): a global batch given in
    tokens (16M) would take seconds one by one."""
    found = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    found = sorted(set(found + [n // d for d in found]))
    return [d for d in found if limit is None or d <= limit]


def valid_tp(shape: ModelShape, limit: int) -> list[int]:
    """TP degrees up to `limit` that divide the heads, ffn_dim and vocabulary and either divide the
    KV heads or are a multiple of them (KV heads replicated)."""
    common = math.gcd(math.gcd(shape.n_heads, shape.ffn_dim), shape.vocab_size)
    return [t for t in divisors(common, limit) if shape.n_kv_heads % t == 0 or t % shape.n_kv_heads == 0]


def kv_heads_replicated(shape: ModelShape, tp: int) -> int:
    """How many TP ranks hold each KV head: 1 when tp divides the KV heads, tp / n_kv_heads when
    tp is a multiple of them (GQA with more TP ranks than KV heads, as Megatron-LM does)."""
    return tp // shape.n_kv_heads if tp > shape.n_kv_heads and tp % shape.n_kv_heads == 0 else 1


def layout_problems(
    layout: Layout, shape: ModelShape, *, world_size: int, seq_len: int, global_batch: int, micro_batch: int,
    gpus_per_node: int | None = None,
) -> list[str]:  # fmt: skip
    """Each rule of issue 13 that this (resolved) layout breaks, as one clause with its arithmetic."""
    problems: list[str] = []
    lay = layout
    product = lay.world_size
    if product != world_size:
        problems.append(
            f"dp_replicate × dp_shard × tp × pp × cp = {lay.dp_replicate} × {lay.dp_shard} × {lay.tp} × {lay.pp} × "
            f"{lay.cp} = {product:,} ≠ world size {world_size:,}"
        )
    tp = lay.tp
    if tp > 1:
        options = ", ".join(map(str, valid_tp(shape, max(tp, gpus_per_node or 8))))
        for key, value in (("n_heads", shape.n_heads), ("ffn_dim", shape.ffn_dim), ("vocab_size", shape.vocab_size)):
            if value % tp:
                problems.append(
                    f"parallel.tp={tp} does not divide model.{key}={value:,} ({value:,} / {tp} = {value / tp:.4g}; "
                    f"valid tp: {options})"
                )
        kv = shape.n_kv_heads
        if kv % tp and tp % kv:
            problems.append(
                f"parallel.tp={tp} neither divides model.n_kv_heads={kv} nor is a multiple of it "
                f"(KV heads cannot be split or replicated evenly; valid tp: {options})"
            )
    if gpus_per_node and tp > gpus_per_node:
        problems.append(f"parallel.tp={tp} > cluster.gpus_per_node={gpus_per_node}: TP groups must stay inside a node")
    v = lay.pp_virtual_stages or 1
    if shape.n_layers < lay.pp * v:
        problems.append(
            f"parallel.pp × pp_virtual_stages = {lay.pp} × {v} = {lay.pp * v} stages > model.n_layers={shape.n_layers}"
        )
    if lay.pp_schedule != "interleaved_1f1b" and v > 1:
        problems.append(f"parallel.pp_virtual_stages={v} needs parallel.pp_schedule=interleaved_1f1b")
    m = lay.pp_microbatches or 1
    if lay.pp > 1 and m < lay.pp:
        problems.append(
            f"parallel.pp_microbatches={m} < parallel.pp={lay.pp}: the pipeline needs one micro-batch per stage "
            f"(raise train.global_batch to ≥ {lay.pp * lay.dp * micro_batch:,} or lower parallel.pp)"
        )
    if lay.pp_schedule == "interleaved_1f1b" and lay.pp > 1 and m % lay.pp:
        good = ", ".join(str(k * lay.pp) for k in range(max(1, m // lay.pp), max(1, m // lay.pp) + 2))
        problems.append(
            f"parallel.pp_microbatches={m} is not a multiple of parallel.pp={lay.pp} "
            f"(interleaved_1f1b: {m} / {lay.pp} = {m / lay.pp:.4g}; e.g. {good})"
        )
    if seq_len % (2 * lay.cp) and lay.cp > 1:
        problems.append(
            f"train.seq_len={seq_len:,} is not divisible by 2 × parallel.cp = {2 * lay.cp} "
            f"({seq_len:,} / {2 * lay.cp} = {seq_len / (2 * lay.cp):.6g}; CP cuts the sequence into 2·cp chunks)"
        )
    per_step = lay.dp * micro_batch
    if per_step and global_batch % per_step:
        problems.append(
            f"train.global_batch={global_batch:,} is not divisible by dp × micro_batch = {lay.dp} × {micro_batch} = "
            f"{per_step:,} ({global_batch:,} / {per_step:,} = {global_batch / per_step:.6g})"
        )
    elif lay.pp_microbatches is not None and per_step and lay.pp_microbatches * per_step != global_batch:
        problems.append(
            f"parallel.pp_microbatches={lay.pp_microbatches} × dp {lay.dp} × micro_batch {micro_batch} = "
            f"{lay.pp_microbatches * per_step:,} ≠ train.global_batch={global_batch:,}"
        )
    return problems


def validate_layout(
    layout: Layout, shape: ModelShape, *, world_size: int, seq_len: int, global_batch: int, micro_batch: int = 1,
    gpus_per_node: int | None = None,
) -> Layout:  # fmt: skip
    """The resolved layout, or ConfigError with one line that gives the arithmetic of every broken rule."""
    resolved = layout.resolve(world_size, global_batch=global_batch, micro_batch=micro_batch)
    problems = layout_problems(resolved, shape, world_size=world_size, seq_len=seq_len, global_batch=global_batch,
                               micro_batch=micro_batch, gpus_per_node=gpus_per_node)  # fmt: skip
    if problems:
        raise ConfigError("bad parallel layout: " + "; ".join(problems))
    return resolved


def layout_notes(layout: Layout, shape: ModelShape) -> list[str]:
    """What a valid layout implies that a user should know (KV heads replicated, uneven stages)."""
    notes = []
    copies = kv_heads_replicated(shape, layout.tp)
    if copies > 1:
        notes.append(f"tp={layout.tp} > n_kv_heads={shape.n_kv_heads}: each KV head is replicated on {copies} TP ranks")
    stages = layout.pp * (layout.pp_virtual_stages or 1)
    if layout.pp > 1 and shape.n_layers % stages:
        notes.append(
            f"{shape.n_layers} layers over {stages} pipeline chunks are uneven: the first and last stages get fewer "
            "(they also hold the embedding and the output head)"
        )
    return notes


def bubble_fraction(layout: Layout) -> float:
    """The idle fraction of a step in the pipeline's warm-up and drain (Narayanan et al. 2021)."""
    p = layout.pp
    if p <= 1:
        return 0.0
    m = layout.pp_microbatches or p
    v = (layout.pp_virtual_stages or 1) if layout.pp_schedule == "interleaved_1f1b" else 1
    return (p - 1) / (v * m + p - 1)


def mesh_shape(layout: Layout) -> tuple[tuple[str, int], ...]:
    """(name, size) per mesh dimension, outermost first, for torch's init_device_mesh."""
    return tuple((name, getattr(layout, name)) for name in MESH_DIMS)


def mesh_coords(rank: int, layout: Layout) -> dict[str, int]:
    """The coordinates of a global rank on the mesh (TP innermost, PP outermost)."""
    if not 0 <= rank < layout.world_size:
        raise ValueError(f"rank {rank} outside a world of {layout.world_size}")
    coords = {}
    rest = rank
    for name in reversed(MESH_DIMS):
        size = getattr(layout, name)
        coords[name] = rest % size
        rest //= size
    return {name: coords[name] for name in MESH_DIMS}


def rank_of(coords: dict[str, int], layout: Layout) -> int:
    """The global rank at these mesh coordinates (inverse of `mesh_coords`)."""
    rank = 0
    for name in MESH_DIMS:
        rank = rank * getattr(layout, name) + coords[name]
    return rank


def dim_stride(layout: Layout, dim: str) -> int:
    """Distance between neighbouring ranks of one group along `dim` (1 for TP)."""
    stride = 1
    for name in reversed(MESH_DIMS):
        if name == dim:
            return stride
        stride *= getattr(layout, name)
    raise ValueError(f"unknown mesh dimension {dim!r}; known: {', '.join(MESH_DIMS)}")


def rank_groups(layout: Layout) -> dict[str, list[list[int]]]:
    """For each mesh dimension (and `dp`, replicate × shard together), the groups of global ranks
    that communicate along it, each sorted, groups in order of their first rank."""
    world = layout.world_size
    out: dict[str, list[list[int]]] = {}
    for name in MESH_DIMS:
        stride, size = dim_stride(layout, name), getattr(layout, name)
        seen: set[int] = set()
        groups = []
        for start in range(world):
            if start in seen:
                continue
            group = [start + i * stride for i in range(size)]
            seen.update(group)
            groups.append(group)
        out[name] = groups
    stride, size = dim_stride(layout, "dp_shard"), layout.dp_shard * layout.dp_replicate
    seen = set()
    out["dp"] = []
    for start in range(world):
        if start not in seen:
            group = [start + i * stride for i in range(size)]
            seen.update(group)
            out["dp"].append(group)
    return out


def stage_layers(n_layers: int, pp: int) -> list[int]:
    """Transformer layers per pipeline stage, balanced: the remainder goes to the middle stages
    first, so the first stage (embedding) and the last (output head and loss) carry fewer."""
    base, extra = divmod(n_layers, pp)
    counts = [base] * pp
    order = [*range(1, pp - 1), 0, pp - 1] if pp > 2 else list(range(pp))
    for index in order[:extra]:
        counts[index] += 1
    return counts
