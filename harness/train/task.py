"""`harness train`: the validation that runs before any rank starts (validate -> TrainPlan), and
on one rank: the mesh, the model and engine, resume, then the loop of `harness.train.trainer`.
A dry run (train.dry_run) plans without ranks: the memory per device of the layout, whether it
fits the hardware, the checkpoint's size and the estimated step (`harness.train.plan`);
train.plan=auto chooses the layout (the fastest that fits) and trains it unless it is a dry run.

The parallel layout (section `parallel`, issue 13) is checked here with perf.layout's rules
(`validate_layout`: every broken rule with its arithmetic, one line, exit 2) plus what this
trainer does not do: data-parallel-only engines, KV heads replicated over TP, tied embeddings
across pipeline stages, sequence shards that do not divide."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import kernels
from harness import devices, display
from harness.config.job import Job
from harness.config.schema import RunConfig
from harness.dist import DistContext, gather_objects, host_name
from harness.errors import EXIT_OK, ConfigError
from harness.hardware import Profile, peak_tflops
from harness.perf.layout import Layout, bubble_fraction, layout_notes, validate_layout
from harness.perf.shape import ModelShape, flops_per_token, param_count
from harness.results import RunRecord
from harness.tasks import Outcome
from harness.train import checkpoint, metrics, resume, trainer
from harness.train import plan as planner
from harness.train.data import BatchSpec, SyntheticData, TokenFileData, open_token_file
from harness.train.engines import DATA_PARALLEL_ONLY, ENGINES, build_engine
from harness.train.engines.base import COMPUTE_DTYPES
from harness.train.mesh import build_mesh, mesh_record
from harness.train.parallelize import compile_stats
from harness.train.tensor_parallel import FUSED_CROSS_ENTROPY_TP

step_line = trainer.step_line
"""The console line of a step (kept here for its callers; it lives with the loop in trainer)."""


def model_shape(cfg: RunConfig) -> ModelShape:
    """The model's shape, checked: heads divide the hidden size, KV heads divide the heads."""
    m = cfg.model
    if m.n_heads < 1 or m.dim % m.n_heads:
        raise ConfigError(f"model.dim={m.dim} is not divisible by model.n_heads={m.n_heads}")
    if m.n_kv_heads < 1 or m.n_heads % m.n_kv_heads:
        raise ConfigError(f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={m.n_kv_heads}")
    if (m.dim // m.n_heads) % 2:
        raise ConfigError(f"head dimension {m.dim // m.n_heads} is odd; rotary embeddings need an even one")
    for key in ("vocab_size", "dim", "n_layers", "ffn_dim", "max_seq_len"):
        if getattr(m, key) < 1:
            raise ConfigError(f"model.{key}={getattr(m, key)} must be >= 1")
    return ModelShape(m.vocab_size, m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.ffn_dim, m.max_seq_len,
                      m.rope_theta, m.norm_eps, m.tied_embeddings)  # fmt: skip


def accumulation_steps(cfg: RunConfig, dp_size: int) -> int:
    """Micro-batches per rank per optimizer step; refuses a global batch that does not split."""
    t = cfg.train
    per_step = t.micro_batch * dp_size
    global_batch = t.global_batch or per_step
    if t.micro_batch < 1 or global_batch % per_step:
        raise ConfigError(
            f"train.global_batch={global_batch} is not a multiple of train.micro_batch x data-parallel ranks "
            f"= {t.micro_batch} x {dp_size} = {per_step}"
        )
    return global_batch // per_step


@dataclass(frozen=True)
class TrainPlan:
    """What `harness train` will run: the model's shape, the resolved parallel layout (None when
    the world size is only known once the ranks start), and whether it is a dry run (which plans
    without ranks)."""

    shape: ModelShape
    dry_run: bool = False
    layout: Layout | None = None
    profile: Profile | None = None
    """The hardware planned for (a dry run, train.plan=auto); None: not needed or not known."""
    ranked: tuple[dict[str, Any], ...] = ()
    """train.plan=auto: the best layouts that fit (`train_plan_layout` rows), fastest first; the
    layout above is the first."""


def validate(job: Job) -> TrainPlan:
    """Every check that can run before the ranks start (bad input: one line, exit code 2)."""
    return check(job.config, job.world_size, job.device_type)


def check(cfg: RunConfig, world_size: int | None, device_type: str, *, on_ranks: bool = False) -> TrainPlan:
    """The checks of a training config for this world size (None: not known yet, the layout is
    checked on the ranks): the model's shape, the resolved (or chosen) layout, the hardware. Before
    the ranks start, also whether its checkpoint folder may be used (harness.train.resume)."""
    shape = model_shape(cfg)
    t = cfg.train
    if cfg.engine.name not in ENGINES:
        raise ConfigError(f"engine={cfg.engine.name!r}; choices: {', '.join(ENGINES)}")
    if cfg.engine.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"engine.zero_stage={cfg.engine.zero_stage}; choices: 0, 1, 2, 3")
    if t.dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"train.dtype={t.dtype!r}; choices: {', '.join(COMPUTE_DTYPES)}")
    for key in ("steps", "seq_len", "log_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key}={getattr(t, key)} must be >= 1")
    if t.exit_after_step < 0:
        raise ConfigError(f"train.exit_after_step={t.exit_after_step} must be >= 0 (0: run to train.steps)")
    if t.seq_len > shape.max_seq_len:
        raise ConfigError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len={shape.max_seq_len}")
    metrics.validate(cfg.logger)
    planner.check_options(cfg)
    if t.compile and cfg.engine.name == "deepspeed" and cfg.engine.zero_stage == 3:
        raise ConfigError("train.compile=true with DeepSpeed ZeRO-3: its weight-gathering hooks on every submodule "
                          "are torch.compiler.disable'd, which breaks a compiled block's graph; use engine=fsdp "
                          "(or engine.zero_stage ≤ 2)")  # fmt: skip
    if t.resume not in ("auto", "never") and not (Path(t.resume) / checkpoint.TRAINER).is_file():
        raise ConfigError(f"train.resume={t.resume!r}: not a checkpoint folder; use auto, never or a step-* folder")
    auto = t.plan == "auto"
    profile = planner.profile_of(cfg, device_type, need=auto) if t.dry_run or auto else None
    layout, ranked = None, ()
    if world_size is not None and auto:
        assert profile is not None
        layout, ranked = choose_layout(cfg, shape, world_size, profile)
    elif world_size is not None:
        layout = layout_of(cfg, shape, world_size, device_type)
    plan = TrainPlan(shape, bool(t.dry_run), layout, profile, ranked)
    if t.dry_run:
        return plan
    if cfg.data.kind == "tokens":
        open_token_file(cfg.data.path, cfg.data.dtype, shape.vocab_size, t.seq_len)
    elif cfg.data.kind != "synthetic":
        raise ConfigError(f"data.kind={cfg.data.kind!r}; choices: synthetic, tokens")
    if not on_ranks:  # the lock, the free space, a usable checkpoint (the ranks verify every byte)
        global_batch = t.global_batch or (t.micro_batch * layout.dp if layout else None)
        need = planner.checkpoint_bytes(shape, cfg.engine, t, world_size=world_size or 1)
        resume.before_ranks(cfg, shape, global_batch, need)
    return plan


def choose_layout(cfg: RunConfig, shape: ModelShape, world_size: int,
                  profile: Profile) -> tuple[Layout, tuple[dict[str, Any], ...]]:  # fmt: skip
    """train.plan=auto: the fastest layout that fits, and the best planner.TOP as rows."""
    device = planner.cost_device(profile, need=True)
    assert device is not None
    plans = planner.auto_plans(cfg, shape, device, world_size)
    return plans[0].layout, tuple(planner.layout_row(i, p) for i, p in enumerate(plans[: planner.TOP], 1))


def layout_of(cfg: RunConfig, shape: ModelShape, world_size: int, device_type: str) -> Layout:
    """The resolved layout of section `parallel` on `world_size` ranks, checked (ConfigError)."""
    p, t = cfg.parallel, cfg.train
    layout = Layout(dp_replicate=p.dp_replicate, dp_shard=p.dp_shard, tp=p.tp, pp=p.pp, cp=p.cp,
                    pp_schedule=p.pp_schedule, pp_microbatches=p.pp_microbatches,
                    pp_virtual_stages=p.pp_virtual_stages, sequence_parallel=p.sequence_parallel)  # fmt: skip
    model_parallel = {k: getattr(p, k) for k in ("tp", "pp", "cp", "dp_replicate") if getattr(p, k) > 1}
    if cfg.engine.name in DATA_PARALLEL_ONLY and model_parallel:
        asked = ", ".join(f"parallel.{k}={v}" for k, v in model_parallel.items())
        raise ConfigError(f"engine={cfg.engine.name} is data-parallel only ({asked}): use engine=fsdp, "
                          "the native engine for tensor, pipeline, context and hybrid-sharded layouts")  # fmt: skip
    first = layout.resolve(world_size)
    dp = first.dp
    if first.world_size == world_size:  # the batch's own message, as before layouts; else the product's first
        accumulation_steps(cfg, dp)
    # TP beyond one node only matters on GPUs; a dry run plans for the cluster.
    per_node = cfg.cluster.gpus_per_node if device_type == "cuda" or t.dry_run else None
    resolved = validate_layout(layout, shape, world_size=world_size, seq_len=t.seq_len,
                               global_batch=t.global_batch or t.micro_batch * dp, micro_batch=t.micro_batch,
                               gpus_per_node=per_node)  # fmt: skip
    if not t.dry_run:
        planner.trainer_limits(resolved, shape, t.seq_len)
    return resolved


def run(job: Job, ctx: DistContext | None, record: RunRecord | None) -> Outcome:
    """Train on this rank (rank 0 records every logged step and the summary); a dry run plans."""
    cfg = job.config
    if ctx is None:
        return dry_run(job, record)
    # The world is known now: check again with it (under an external launcher it was not).
    plan = check(cfg, ctx.world_size, ctx.device.type, on_ranks=True)
    shape, layout = plan.shape, plan.layout
    assert layout is not None
    t = cfg.train
    accumulation = accumulation_steps(cfg, layout.dp)
    if t.deterministic:
        # cuBLAS refuses deterministic mode without a fixed workspace; read when its handle is
        # made, at the first matmul, which is still to come.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        # Deterministic algorithms, without NaN-filling every fresh allocation: the fill is what
        # made DeepSpeed ZeRO-2 36x slower on CPU (its flat gradient buckets are allocated every
        # step; aten::fill_ went from 0.6 % to 59 % of the step), and results do not depend on it.
        torch.utils.deterministic.fill_uninitialized_memory = False
    torch.manual_seed(t.seed)  # the weights are keyed by name (model.init_weights); this seeds the rest
    fused = cfg.model.fused_kernels
    kernel_path = kernels.path_for(torch.empty(0, device=ctx.device)) if fused else None
    dims = build_mesh(layout, ctx.device.type, ctx.rank) if cfg.engine.name == "fsdp" else None
    engine = build_engine(shape, t, cfg.engine, ctx.device, dims=dims, fused=fused, micro_batch=t.micro_batch,
                          accumulation=accumulation)  # fmt: skip
    spec = BatchSpec(t.micro_batch, t.seq_len, shape.vocab_size, t.seed)
    data = SyntheticData(spec) if cfg.data.kind == "synthetic" else TokenFileData(spec, cfg.data.path, cfg.data.dtype)
    start, rng = 0, None
    # Every rank verifies a share of each candidate's files; all take the same one.
    choice = resume.on_ranks(cfg, shape, t.micro_batch * accumulation * layout.dp, ctx.rank, ctx.world_size)
    if choice.path is not None:
        engine.load(choice.path)
        start = choice.step
        rng = checkpoint.restore_rng(choice.path, world_size=ctx.world_size, seed=t.seed, step=start)
    for line in choice.warnings if record else ():
        display.note(line)
        record.add_notes(line)
    hosts = gather_objects(ctx, host_name())
    tr = trainer.Trainer(engine, data, shape, layout, None, start, accumulation,
                         tokens_per_step=t.micro_batch * accumulation * layout.dp * t.seq_len,
                         fpt=flops_per_token(shape, t.seq_len),
                         hfu_fpt=flops_per_token(shape, t.seq_len, recompute=t.activation_checkpointing),
                         peak=peak_tflops(devices.device_name(ctx.device.type), ctx.device.type, t.dtype))  # fmt: skip
    if record:
        _record_setup(cfg, record, tr, kernel_path=kernel_path, rng=rng, hosts=hosts or [], plan=plan)
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # preemption: finish the step, checkpoint, exit
        signal.signal(sig, trainer.on_stop)
    if record:
        tr.logger = metrics.make_logger(cfg.logger, record.path, record.run_id, record.manifest["config"])
    try:
        outcome = trainer.loop(cfg, ctx, record, tr)
    finally:
        if tr.logger:
            tr.logger.finish()
    if record and t.compile:
        record.update(train={**record.manifest["train"], **compile_stats()})
    return outcome


def _record_setup(cfg: RunConfig, record: RunRecord, tr: trainer.Trainer, *, kernel_path: str | None,
                  rng: str | None, hosts: list[str], plan: TrainPlan) -> None:  # fmt: skip
    """Rank 0: the run's training facts in the manifest (model, FLOPs, layout, mesh and the hosts
    of each group, what resuming did, compile, the layouts train.plan=auto ranked), and the notes
    a user should see."""
    t, shape, layout = cfg.train, tr.shape, tr.layout
    params = param_count(shape)
    device = devices.device_name(tr.engine.device.type)
    fused_ce = None
    if kernel_path:
        fused_ce = FUSED_CROSS_ENTROPY_TP if layout.tp > 1 else "fused linear cross-entropy, whole vocabulary"
    elif layout.tp > 1:
        fused_ce = "off: loss parallel (logits sharded over the vocabulary)"
    record.update(train={
        "n_params": params.total, "n_params_embedding": params.embedding, "flops_per_token": tr.fpt,
        "tokens_per_step": tr.tokens_per_step, "accumulation_steps": tr.accumulation, "resumed_from_step": tr.start,
        "peak_tflops": tr.peak, "mfu_convention": "PaLM/torchtitan: 6(N - N_embedding) + 12 L H Q T per token",
        "deterministic": t.deterministic, "seed": t.seed, "fused_kernels": kernel_path or "off",
        "data": cfg.data.kind, "entropy_floor_nats": tr.data.entropy_floor_nats,
        "layout": {**layout.to_row(), "describe": layout.describe()}, "pipeline_bubble": bubble_fraction(layout),
        "mesh": mesh_record(layout, hosts), "cross_entropy_tp": fused_ce, "rng_on_resume": rng,
        "exit_after_step": t.exit_after_step or None, "compile": t.compile,
        "plan": {"mode": t.plan, "hardware": plan.profile.name if plan.profile else None,
                 "layouts": [row["layout"] for row in plan.ranked]},
    })  # fmt: skip
    if plan.ranked and plan.profile:
        record.add_rows(list(plan.ranked))
        planner.show_layouts(list(plan.ranked), world_size=layout.world_size, hardware_name=plan.profile.name)
    if tr.data.entropy_floor_nats is not None:
        display.note(f"data: a seeded Markov chain whose loss floor (entropy rate) is "
                     f"{tr.data.entropy_floor_nats:.3f} nats; uniform guessing scores "
                     f"{math.log(shape.vocab_size):.3f}")  # fmt: skip
    for note in layout_notes(layout, shape):
        display.note(f"layout: {note}")
    if layout.world_size > 1 and not record.manifest["train"]["mesh"]["tp_within_node"]:
        display.note("layout: a TP group spans hosts (TP is meant for the fast links inside a node)")
    if rng and rng.startswith("derived"):
        display.note(f"resume: random generators {rng}")
    if kernel_path == "torch":
        display.note("model.fused_kernels=true: Triton does not run here, so the fused ops run their PyTorch "
                     "fallback (set TRITON_INTERPRET=1 for the Triton interpreter)")  # fmt: skip
    if getattr(tr.engine, "config", None):
        record.add_file("deepspeed_config.json", json.dumps(tr.engine.config, indent=2).encode())
    if tr.peak is None:
        display.note(f"MFU unknown: no datasheet peak for {device} in {t.dtype}")


def dry_run(job: Job, record: RunRecord | None) -> Outcome:
    """The plan of a run, from shapes alone: parameters, FLOPs, memory per device of its layout,
    whether it fits the hardware and what to change, the checkpoint's size, the estimated step;
    with train.plan=auto the ranked layouts too."""
    cfg, plan = job.config, job.plan
    world_size = job.world_size or 1
    if plan.layout is None:  # planned without a world size: plan for one rank
        plan = check(cfg, world_size, job.device_type)
    assert plan.layout is not None
    row = planner.plan_row(cfg, plan.shape, plan.layout, world_size=world_size, profile=plan.profile)
    if record:
        record.add_rows([row, *plan.ranked])
        summary = {k: v for k, v in row.items() if k not in ("kind", "passed")}
        record.update(summary={"train_plan": summary, "train_plan_layouts": [r["layout"] for r in plan.ranked]})

    def show() -> None:
        if plan.ranked:
            assert plan.profile is not None
            planner.show_layouts(list(plan.ranked), world_size=world_size, hardware_name=plan.profile.name)
        planner.show_plan(row)

    return Outcome("ok", None, EXIT_OK, show)
