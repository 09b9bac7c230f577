"""What a training run needs and what it will cost, before a rank starts (issue 14).

- **Memory per device** of the run's layout (`harness.perf.memory.layout_memory`, formulas in
  shared/REFERENCE.md §10): weights, gradients and optimizer states under dp_shard / tp / pp (the
  first stage also holds the token embedding, the last the output head), activations per
  micro-batch with or without recompute (Korthikanti et al. 2022; divided by t under TP + SP),
  times the micro-batches a pipeline stage keeps in flight (p for 1F1B on the first stage, m for
  GPipe, about p·(1 + (p−1)/(p·v)) interleaved), plus the fp32 logits and their gradient. DeepSpeed
  below ZeRO-3 and DDP keep the whole weights (`engine_memory`). A run `fits` when it needs at most
  0.9 × the profile's `memory_gib`; when it does not, the row says what to change.
- **Cost**: the cost model's step time, bubble and MFU (`harness.perf.step.estimate_step`) when
  the profile has the network figures.
- **train.plan=auto**: every layout of the world size that the layout rules and this trainer
  accept, that fits, ranked by estimated step time (`harness.perf.search.plan_layouts`); the best
  is trained. It keeps train.activation_checkpointing as given and says when turning it on would
  make layouts fit.
- **Checkpoint bytes** on disk (`checkpoint_bytes`), for the free-space check before a save.

Hardware: `hardware=NAME` plans for that profile (one without memory_gib is refused);
`hardware=auto` is the GPU's own profile. On a CPU there is no device memory to plan against:
the dry run reports the memory without a verdict, and train.plan=auto asks for a named profile
(CPU ranks then train the layout chosen for those GPUs, a rehearsal of the real run).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.table import Table

from harness import devices, display, hardware
from harness.config.schema import EngineConfig, ParallelConfig, RunConfig, TrainConfig
from harness.errors import ConfigError
from harness.perf.device import Device, canonical_dtype, device_from_profile
from harness.perf.layout import Layout, bubble_fraction, kv_heads_replicated
from harness.perf.memory import GIB, USABLE_FRACTION, MemoryReport, layout_memory, state_bytes_per_param
from harness.perf.search import Plan, plan_layouts
from harness.perf.shape import ModelShape, flops_per_token, param_count
from harness.perf.step import estimate_step
from harness.perf.workload import Workload

PLAN_MODES = ("off", "auto")
TOP = 5
"""Layouts train.plan=auto prints and records."""
CHECKPOINT_RANK_BYTES = 64 * 1024
"""Per rank, what a checkpoint holds besides the tensors: its random generators (rng-N.pt, about
6.5 KB on CPU), DCP or DeepSpeed metadata, trainer.json; a margin, measured on CPU."""


def zero_stage(engine: EngineConfig) -> int:
    """What the engine shards, as a ZeRO stage: fsdp 3, ddp 0, deepspeed its engine.zero_stage."""
    return {"fsdp": 3, "ddp": 0}.get(engine.name, engine.zero_stage)


def checkpoint_bytes(shape: ModelShape, engine: EngineConfig, train: TrainConfig, *, world_size: int = 1) -> int:
    """Bytes a full checkpoint of weights and optimizer state takes on disk, all ranks together.

    Per parameter, as measured on CPU (tiny model, 2 ranks, within the per-rank margin):
    - fsdp and ddp (torch.distributed.checkpoint): fp32 weights and AdamW's two fp32 moments, 12;
    - deepspeed ZeRO-3: its fp32 partitions and moments, 12 (the 16-bit module weights are not
      gathered for the save);
    - deepspeed ZeRO-1/2: the module's weights in the compute dtype (4 in fp32, 2 in bf16/fp16) and
      the fp32 master partitions with the moments, 12: 16 or 14;
    - deepspeed ZeRO-0: the module's weights and torch's AdamW moments, 12 in fp32; in bf16/fp16 the
      16-bit module weights and DeepSpeed's fp32 master weights with moments, 14.
    Replicated tensors are written once. Plus CHECKPOINT_RANK_BYTES per rank."""
    stage = zero_stage(engine)
    half = canonical_dtype(train.dtype) in ("bfloat16", "float16")
    if engine.name != "deepspeed" or stage == 3:
        per_param = 12
    elif stage == 0:
        per_param = 14 if half else 12
    else:
        per_param = 12 + (2 if half else 4)
    return per_param * param_count(shape).total + CHECKPOINT_RANK_BYTES * world_size


def trainer_limits(layout: Layout, shape: ModelShape, seq_len: int) -> None:
    """What this trainer does not do, although the layout itself is valid (the dry run and the
    cost model accept it): ConfigError."""
    copies = kv_heads_replicated(shape, layout.tp)
    if copies > 1:
        raise ConfigError(
            f"parallel.tp={layout.tp} > model.n_kv_heads={shape.n_kv_heads}: each KV head would be replicated on "
            f"{copies} TP ranks, which this trainer does not do; use tp ≤ {shape.n_kv_heads}"
        )
    if shape.tied_embeddings and layout.pp > 1:
        raise ConfigError(f"model.tied_embeddings=true with parallel.pp={layout.pp}: the embedding (first stage) "
                          "and the output head (last stage) cannot share a weight; use pp=1")  # fmt: skip
    local = seq_len // layout.cp
    if layout.tp > 1 and layout.sequence_parallel and local % layout.tp:
        raise ConfigError(
            f"train.seq_len / parallel.cp = {seq_len} / {layout.cp} = {local} tokens is not divisible by "
            f"parallel.tp={layout.tp} (sequence parallelism gives each TP rank an equal share of the sequence)"
        )


def _trainable(layout: Layout, shape: ModelShape, seq_len: int) -> bool:
    try:
        trainer_limits(layout, shape, seq_len)
    except ConfigError:
        return False
    return True


def workload(cfg: RunConfig, dp: int) -> Workload:
    """train.* as the cost model's step (global batch 0: micro_batch × dp)."""
    t = cfg.train
    return Workload(seq_len=t.seq_len, global_batch=t.global_batch or t.micro_batch * dp, micro_batch=t.micro_batch,
                    dtype=t.dtype, activation_checkpointing=t.activation_checkpointing)  # fmt: skip


def check_options(cfg: RunConfig) -> None:
    """train.plan, and the keys it needs or excludes (ConfigError, exit 2)."""
    t = cfg.train
    if t.plan not in PLAN_MODES:
        raise ConfigError(f"train.plan={t.plan!r}; choices: {', '.join(PLAN_MODES)}")
    if not isinstance(cfg.cluster.gpus_per_node, int) or cfg.cluster.gpus_per_node < 1:
        raise ConfigError(f"cluster.gpus_per_node={cfg.cluster.gpus_per_node!r}: must be a whole number ≥ 1")
    if cfg.cluster.gpus is not None:
        raise ConfigError(f"cluster.gpus={cfg.cluster.gpus!r} is for harness project (GPU counts to project); "
                          "harness train plans for its own world size: launch.nproc=N (any N with "
                          "train.dry_run=true)")  # fmt: skip
    if t.plan != "auto":
        return
    if cfg.engine.name != "fsdp":
        raise ConfigError(f"train.plan=auto chooses a parallel layout, which engine=fsdp trains; engine="
                          f"{cfg.engine.name} is data-parallel only: add engine=fsdp")  # fmt: skip
    if not t.global_batch:
        raise ConfigError("train.plan=auto needs train.global_batch (sequences per step, which every layout "
                          "keeps), e.g. train.global_batch=2048")  # fmt: skip
    given = [f"parallel.{f.name}={getattr(cfg.parallel, f.name)}" for f in dataclasses.fields(ParallelConfig)
             if getattr(cfg.parallel, f.name) != f.default]  # fmt: skip
    if given:
        raise ConfigError(f"train.plan=auto chooses the layout itself, but {', '.join(given)} is given: "
                          "drop it, or keep it with train.plan=off")  # fmt: skip


def profile_of(cfg: RunConfig, device_type: str, *, need: bool) -> hardware.Profile | None:
    """The profile to plan for: hardware=NAME (with any overrides of its keys), or for auto this
    GPU's. A CPU (or, for a dry run, an unknown GPU) gives None unless `need`. A profile without
    memory_gib is refused (ConfigError)."""
    named = cfg.hardware.name != "auto"
    if not named and device_type != "cuda":
        if need:
            raise ConfigError(f"train.plan=auto: hardware=auto on {device_type} has no device memory or links to "
                              "plan for; name the GPUs to plan for (e.g. hardware=h100-sxm; ranks here then train "
                              "the layout chosen for them)")  # fmt: skip
        return None
    try:
        profile = hardware.resolve(dataclasses.asdict(cfg.hardware), devices.device_name(device_type), device_type)
    except ConfigError:
        if need or named:
            raise
        return None
    if not profile.memory_gib:
        raise ConfigError(f"hardware={profile.name} has no memory_gib: the plan cannot say what fits; add it to "
                          f"configs/hardware/{profile.name}.yaml or give hardware.memory_gib=GIB")  # fmt: skip
    return profile


def cost_device(profile: hardware.Profile | None, *, need: bool) -> Device | None:
    """The cost model's device, or None (a profile without link figures) unless `need`."""
    if profile is None:
        return None
    try:
        return device_from_profile(profile)
    except ConfigError as exc:
        if need:
            raise ConfigError(f"train.plan=auto ranks layouts by the cost model: {exc}") from None
        return None


def engine_memory(shape: ModelShape, layout: Layout, work: Workload, *, engine: EngineConfig,
                  memory_gib: float | None, gpus_per_node: int) -> MemoryReport:  # fmt: skip
    """The layout's memory per device for this engine: fsdp and ZeRO-3 shard weights, gradients and
    optimizer states over dp_shard (`layout_memory`); ZeRO-2 keeps whole weights, ZeRO-1 whole
    gradients too, DDP (ZeRO-0) everything whole (data-parallel layouts only)."""
    report = layout_memory(shape, layout, work, memory_gib=memory_gib, gpus_per_node=gpus_per_node)
    stage = zero_stage(engine)
    if stage >= 3:
        if engine.name != "fsdp":  # DeepSpeed lays out data parallelism only
            advice = tuple(f"engine=fsdp and {tip}" if "parallel." in tip else tip for tip in report.advice)
            report = dataclasses.replace(report, advice=advice)
        return report
    psi, dp = param_count(shape).total, layout.dp
    w, g, o = state_bytes_per_param(work.dtype)
    terms = {"weights_bytes": w * psi, "gradients_bytes": g * psi // (dp if stage >= 2 else 1),
             "optimizer_bytes": o * psi // (dp if stage >= 1 else 1), "working_weights_bytes": 0}  # fmt: skip
    total = sum(terms.values()) + report.activations_bytes + report.logits_bytes
    usable = report.usable_bytes
    fits = None if usable is None else total <= usable
    advice: tuple[str, ...] = ()
    if fits is False:
        sharded = report.total_bytes
        verdict = "fits" if sharded <= (usable or 0) else "still too much"
        advice = (f"shard weights, gradients and optimizer states: engine=fsdp or engine.zero_stage=3 "
                  f"({sharded / GIB:,.1f} GiB per device, {verdict})",)  # fmt: skip
        advice += tuple(tip for tip in report.advice if "activation_checkpointing" in tip)
    return dataclasses.replace(report, **terms, total_bytes=total, fits=fits, advice=advice)


def auto_plans(cfg: RunConfig, shape: ModelShape, device: Device, world_size: int) -> list[Plan]:
    """train.plan=auto: the layouts of `world_size` GPUs that this trainer runs and that fit, fastest
    first (all of them). None fits: ConfigError naming the closest and what would help."""
    t, per_node = cfg.train, cfg.cluster.gpus_per_node
    work = workload(cfg, world_size)

    def ranked(ac: bool, unfit: bool) -> list[Plan]:
        plans = plan_layouts(shape, device, dataclasses.replace(work, activation_checkpointing=ac), gpus=world_size,
                             gpus_per_node=per_node, top=1 << 30, activation_checkpointing=ac,
                             include_unfit=unfit)  # fmt: skip
        return [p for p in plans if _trainable(p.layout, shape, t.seq_len)]

    fitting = [p for p in ranked(t.activation_checkpointing, False) if p.fits]
    if fitting:
        return fitting
    closest = ranked(t.activation_checkpointing, True)
    if not closest:
        raise ConfigError(f"train.plan=auto: no layout of {world_size:,} GPUs divides model and batch "
                          f"(train.global_batch={t.global_batch}, train.micro_batch={t.micro_batch}); "
                          "try another GPU count or global batch")  # fmt: skip
    best = closest[0]
    hint = ""
    if not t.activation_checkpointing:
        with_ac = [p for p in ranked(True, False) if p.fits]
        if with_ac:
            hint = (f"; with train.activation_checkpointing=true {len(with_ac)} fit, the fastest "
                    f"{with_ac[0].layout.describe()}")  # fmt: skip
    raise ConfigError(
        f"train.plan=auto: no layout of {world_size:,} GPUs fits in {USABLE_FRACTION} × {device.memory_gib:g} GiB; "
        f"the least memory is {best.estimate.memory.total_bytes / GIB:,.1f} GiB per device "
        f"({best.layout.describe()}){hint}"
    )


def layout_row(rank: int, plan: Plan) -> dict[str, Any]:
    """A `train_plan_layout` row: one ranked layout of train.plan=auto."""
    e = plan.estimate
    return {
        "kind": "train_plan_layout", "rank": rank, **plan.layout.to_row(), "layout": plan.layout.describe(),
        "activation_checkpointing": plan.workload.activation_checkpointing,
        "estimated_step_time_s": e.step_time_s, "estimated_tokens_per_s": e.tokens_per_s, "estimated_mfu": e.mfu,
        "pipeline_bubble": e.bubble_fraction, "memory_per_device_bytes": e.memory.total_bytes, "fits": e.fits,
        "passed": True,
    }  # fmt: skip


def plan_row(cfg: RunConfig, shape: ModelShape, layout: Layout, *, world_size: int,
             profile: hardware.Profile | None) -> dict[str, Any]:  # fmt: skip
    """The dry run's `train_plan` row: the model, the layout, its memory per device by term, whether
    it fits and what to change, the checkpoint's size, and the estimated step when the profile
    has the link figures."""
    t, per_node = cfg.train, cfg.cluster.gpus_per_node
    work = workload(cfg, layout.dp)
    memory_gib = profile.memory_gib if profile else None
    report = engine_memory(shape, layout, work, engine=cfg.engine, memory_gib=memory_gib, gpus_per_node=per_node)
    params, fpt = param_count(shape), flops_per_token(shape, t.seq_len)
    tokens_per_step = work.global_batch * t.seq_len
    device = cost_device(profile, need=False)
    estimate = estimate_step(shape, layout, work, device, gpus_per_node=per_node, advise=False) if device else None
    advice = list(report.advice)
    if report.fits is False and device is not None and cfg.train.plan == "off":
        try:
            plans = auto_plans(cfg, shape, device, world_size)
            advice.append(f"train.plan=auto (engine=fsdp) finds {len(plans):,} layouts of {world_size:,} GPUs "
                          f"that fit; the fastest: {plans[0].layout.describe()}")  # fmt: skip
        except ConfigError:
            pass
    return {
        "kind": "train_plan", "model": cfg.model.name, "engine": cfg.engine.name, "zero_stage": zero_stage(cfg.engine),
        "plan": t.plan, "world_size": world_size, "hardware": profile.name if profile else None,
        "gpus_per_node": per_node, "dtype": canonical_dtype(t.dtype), "n_params": params.total,
        "n_params_embedding": params.embedding, "seq_len": t.seq_len, "micro_batch": t.micro_batch,
        "global_batch": work.global_batch, "activation_checkpointing": t.activation_checkpointing,
        "tokens_per_step": tokens_per_step, "flops_per_token": fpt, "flops_per_step": fpt * tokens_per_step,
        **report.to_row(), "memory_advice": advice, "memory_stage": report.stage,
        "in_flight_microbatches": report.in_flight_microbatches,
        "checkpoint_bytes": checkpoint_bytes(shape, cfg.engine, t, world_size=world_size),
        **layout.to_row(), "layout": layout.describe(), "pipeline_bubble": bubble_fraction(layout),
        "estimated_step_time_s": estimate.step_time_s if estimate else None,
        "estimated_tokens_per_s": estimate.tokens_per_s if estimate else None,
        "estimated_mfu": estimate.mfu if estimate else None, "passed": True,
    }  # fmt: skip


def _gib(value: float) -> str:
    return f"{value / GIB:,.2f} GiB"


def show_plan(row: dict[str, Any]) -> None:
    """The dry run's plan: the model, what one device must hold, whether it fits, what it costs."""
    title = (f"plan: {row['model']} on {row['world_size']:,} ranks, {row['engine']} (ZeRO-{row['zero_stage']}), "
             f"{row['layout']}")  # fmt: skip
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    lines = [
        ("parameters", f"{row['n_params']:,}"), ("  of which token embedding", f"{row['n_params_embedding']:,}"),
        ("tokens per step", f"{row['tokens_per_step']:,}"),
        ("FLOPs per token (6N' + 12LHQT)", f"{row['flops_per_token']:.4g}"),
        ("FLOPs per step", f"{row['flops_per_step']:.4g}"), ("pipeline bubble", f"{row['pipeline_bubble']:.1%}"),
    ]  # fmt: skip
    for term in ("weights", "gradients", "optimizer", "working_weights", "activations", "logits"):
        label = "optimizer states" if term == "optimizer" else term.replace("_", " ")
        lines.append((f"memory per device: {label}", _gib(row[f"memory_{term}_bytes"])))
    worst = f" (stage {row['memory_stage']} of {row['pp']}, the fullest)" if row["pp"] > 1 else ""
    lines.append((f"memory per device: total{worst}", _gib(row["memory_per_device_bytes"])))
    capacity = row["device_capacity_bytes"]
    if capacity:
        verdict = "fits" if row["fits"] else "does NOT fit"
        lines.append((f"{row['hardware']}: {USABLE_FRACTION} × {_gib(capacity)}",
                      f"{_gib(USABLE_FRACTION * capacity)}: {verdict}"))  # fmt: skip
    lines.append(("checkpoint on disk (all ranks)", _gib(row["checkpoint_bytes"])))
    if row["estimated_step_time_s"] is not None:
        mfu = f", MFU {row['estimated_mfu']:.1%}" if row["estimated_mfu"] is not None else ""
        lines.append(("estimated step", f"{row['estimated_step_time_s']:,.2f} s{mfu}"))
    for label, value in lines:
        table.add_row(label, value)
    display.console.print(table)
    if not capacity:
        display.note("fits: unknown, no device memory to plan against; name the GPUs: hardware=h100-sxm "
                     "(configs/hardware/)")  # fmt: skip
    for tip in row["memory_advice"]:
        display.note(f"to fit: {tip}")


def show_layouts(rows: list[dict[str, Any]], *, world_size: int, hardware_name: str) -> None:
    """train.plan=auto: the best layouts, with their memory, bubble and estimated MFU."""
    table = Table(title=f"train.plan=auto: the {len(rows)} fastest layouts of {world_size:,} × {hardware_name} "
                        "that fit (cost model)", title_justify="left")  # fmt: skip
    for name in ("#", "layout", "recompute", "memory/device", "bubble", "step (est.)", "MFU (est.)"):
        table.add_column(name, justify="left" if name == "layout" else "right")
    for row in rows:
        mfu = f"{row['estimated_mfu']:.1%}" if row["estimated_mfu"] is not None else "-"
        table.add_row(str(row["rank"]), row["layout"], "on" if row["activation_checkpointing"] else "off",
                      _gib(row["memory_per_device_bytes"]), f"{row['pipeline_bubble']:.1%}",
                      f"{row['estimated_step_time_s']:,.3g} s", mfu)  # fmt: skip
    display.console.print(table)
