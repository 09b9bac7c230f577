"""`harness train`: the validation that runs before any rank starts (validate -> TrainPlan), and
on one rank: build the model and engine, resume, train, log, checkpoint, and stop cleanly on
preemption. A dry run (train.dry_run) plans without ranks."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import kernels
from harness import devices, display
from harness.config.job import Job
from harness.config.schema import RunConfig
from harness.dist import DistContext
from harness.errors import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED, ConfigError
from harness.hardware import peak_tflops
from harness.perf.memory import memory_plan
from harness.perf.shape import ModelShape, flops_per_token, param_count
from harness.results import RunRecord
from harness.tasks import Outcome
from harness.train import checkpoint, metrics
from harness.train.data import BatchSpec, SyntheticData, TokenFileData, first_index, open_token_file
from harness.train.engines import ENGINES, build_engine
from harness.train.engines.base import COMPUTE_DTYPES
from harness.train.model import Transformer

_stop: list[str] = []


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
    """What `harness train` will run: the model's shape, and whether it is a dry run (which
    plans without ranks)."""

    shape: ModelShape
    dry_run: bool = False

    @property
    def ranks(self) -> bool:
        return not self.dry_run


def validate(job: Job) -> TrainPlan:
    """Every check that can run before the ranks start (bad input: one line, exit code 2)."""
    cfg = job.config
    shape = check(cfg, job.world_size or 1)
    return TrainPlan(shape, bool(cfg.train.dry_run))


def check(cfg: RunConfig, world_size: int) -> ModelShape:
    """The checks of a training config for this world size; the model's shape."""
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
    if t.seq_len > shape.max_seq_len:
        raise ConfigError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len={shape.max_seq_len}")
    metrics.validate(cfg.logger)
    if t.resume not in ("auto", "never") and not (Path(t.resume) / checkpoint.TRAINER).is_file():
        raise ConfigError(f"train.resume={t.resume!r}: not a checkpoint folder; use auto, never or a step-* folder")
    accumulation_steps(cfg, world_size)
    if t.dry_run:
        return shape
    if cfg.data.kind == "tokens":
        open_token_file(cfg.data.path, cfg.data.dtype, shape.vocab_size, t.seq_len)
    elif cfg.data.kind != "synthetic":
        raise ConfigError(f"data.kind={cfg.data.kind!r}; choices: synthetic, tokens")
    resume_point(cfg, shape)
    return shape


def resume_point(cfg: RunConfig, shape: ModelShape) -> Path | None:
    """The checkpoint to continue from, checked against this model's shape."""
    if cfg.train.resume == "never":
        return None
    path = checkpoint.latest(Path(cfg.train.ckpt_dir)) if cfg.train.resume == "auto" else Path(cfg.train.resume)
    if path is None:
        return None
    saved = checkpoint.read_trainer_state(path)
    if saved.get("model_shape") != dataclasses.asdict(shape) or saved.get("engine") != cfg.engine.name:
        raise ConfigError(
            f"checkpoint {path} was written for engine {saved.get('engine')} and model "
            f"{saved.get('model_name')}, not {cfg.engine.name} and {cfg.model.name}; "
            "use another train.ckpt_dir or train.resume=never"
        )
    return path


def _on_stop(signum: int, _frame: Any) -> None:
    _stop.append(signal.Signals(signum).name)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run(job: Job, ctx: DistContext | None, record: RunRecord | None) -> Outcome:
    """Train on this rank (rank 0 records every logged step and the summary); a dry run plans."""
    plan: TrainPlan = job.plan
    cfg = job.config
    if ctx is None:
        return dry_run(job, record)
    shape = plan.shape
    check(cfg, ctx.world_size)  # the world is known now (the global batch must split over it)
    t = cfg.train
    accumulation = accumulation_steps(cfg, ctx.world_size)
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
        # Deterministic algorithms, without NaN-filling every fresh allocation: the fill is what
        # made DeepSpeed ZeRO-2 36x slower on CPU (its flat gradient buckets are allocated every
        # step; aten::fill_ went from 0.6 % to 59 % of the step), and results do not depend on it.
        torch.utils.deterministic.fill_uninitialized_memory = False
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    fused = cfg.model.fused_kernels
    model = Transformer(shape, activation_checkpointing=t.activation_checkpointing, fused=fused)
    kernel_path = kernels.path_for(torch.empty(0, device=ctx.device)) if fused else None
    engine = build_engine(model, t, cfg.engine, ctx.device, micro_batch=t.micro_batch, accumulation=accumulation)
    spec = BatchSpec(t.micro_batch, t.seq_len, shape.vocab_size, t.seed)
    data = SyntheticData(spec) if cfg.data.kind == "synthetic" else TokenFileData(spec, cfg.data.path, cfg.data.dtype)
    start = 0
    resume = resume_point(cfg, shape)
    if resume is not None:
        engine.load(resume)
        checkpoint.restore_rng(resume)
        start = checkpoint.read_trainer_state(resume)["step"]
    tokens_per_step = t.micro_batch * accumulation * ctx.world_size * t.seq_len
    fpt = flops_per_token(shape, t.seq_len)
    hfu_fpt = flops_per_token(shape, t.seq_len, recompute=t.activation_checkpointing)
    peak = peak_tflops(devices.device_name(ctx.device.type), ctx.device.type, t.dtype)
    params = param_count(shape)
    if record:
        record.update(train={
            "n_params": params.total, "n_params_embedding": params.embedding, "flops_per_token": fpt,
            "tokens_per_step": tokens_per_step, "accumulation_steps": accumulation, "resumed_from_step": start,
            "peak_tflops": peak, "mfu_convention": "PaLM/torchtitan: 6(N - N_embedding) + 12 L H Q T per token",
            "deterministic": t.deterministic, "seed": t.seed, "fused_kernels": kernel_path or "off",
            "data": cfg.data.kind, "entropy_floor_nats": data.entropy_floor_nats,
        })  # fmt: skip
        if data.entropy_floor_nats is not None:
            display.note(f"data: a seeded Markov chain whose loss floor (entropy rate) is "
                         f"{data.entropy_floor_nats:.3f} nats; uniform guessing scores "
                         f"{math.log(shape.vocab_size):.3f}")  # fmt: skip
        if kernel_path == "torch":
            display.note("model.fused_kernels=true: Triton does not run here, so the fused ops run their PyTorch "
                         "fallback (set TRITON_INTERPRET=1 for the Triton interpreter)")  # fmt: skip
        if getattr(engine, "config", None):
            record.add_file("deepspeed_config.json", json.dumps(engine.config, indent=2).encode())
        if peak is None:
            display.note(f"MFU unknown: no datasheet peak for {devices.device_name(ctx.device.type)} in {t.dtype}")
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # preemption: finish the step, checkpoint, exit
        signal.signal(sig, _on_stop)
    logger = metrics.make_logger(cfg.logger, record.path, record.run_id, record.manifest["config"]) if record else None
    setup = _Setup(engine, data, shape, logger, start, accumulation, tokens_per_step, fpt, hfu_fpt, peak)
    try:
        return _loop(cfg, ctx, record, setup)
    finally:
        if logger:
            logger.finish()


@dataclass
class _Setup:
    """What the loop needs, built once by run()."""

    engine: Any
    data: Any
    shape: ModelShape
    logger: Any
    start: int
    accumulation: int
    tokens_per_step: int
    fpt: int
    """Model FLOPs per token."""
    hfu_fpt: int
    """Hardware FLOPs per token (with recompute)."""
    peak: float | None


def _loop(cfg: RunConfig, ctx: DistContext, record: RunRecord | None, setup: _Setup) -> Outcome:
    """Steps start+1 .. train.steps, with the stop checks, rows and checkpoints."""
    engine, data, shape, logger, accumulation = setup.engine, setup.data, setup.shape, setup.logger, setup.accumulation
    tokens_per_step, fpt, hfu_fpt, peak, start = (
        setup.tokens_per_step,
        setup.fpt,
        setup.hfu_fpt,
        setup.peak,
        setup.start,
    )
    t = cfg.train
    ckpt_dir = Path(t.ckpt_dir)
    step_rows: list[dict[str, Any]] = []
    last = start
    for step in range(start + 1, t.steps + 1):
        flag = torch.tensor([1.0 if _stop else 0.0], device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        if flag.item():
            checkpoint.save(ckpt_dir, last, engine.save, _trainer_state(cfg, shape, last))
            message = f"preempted ({', '.join(_stop) or 'a peer was signalled'}) after step {last}; checkpoint saved"
            if record:
                record.update(step=last)
            return Outcome("interrupted", message, EXIT_PREEMPTED, _summary_printer(record, step_rows))
        micro = [data.batch(step, first_index(dp_rank=ctx.rank, micro=i, micro_batch=t.micro_batch,
                                              accumulation=accumulation)) for i in range(accumulation)]  # fmt: skip
        _sync(ctx)
        started = time.perf_counter()
        result = engine.train_step(step, micro)
        _sync(ctx)
        elapsed = time.perf_counter() - started
        stats = torch.tensor([result.loss, elapsed], dtype=torch.float64, device=ctx.device)
        loss_sum = stats[:1].clone()
        dist.all_reduce(loss_sum)
        slowest = stats[1:].clone()
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        last = step
        if record and (step % t.log_every == 0 or step == t.steps):
            row = _step_row(step, float(loss_sum) / ctx.world_size, result, float(slowest), tokens_per_step,
                            ctx.world_size, fpt, hfu_fpt, peak, _peak_memory(ctx.device))  # fmt: skip
            row["warmup"] = step <= t.warmup_steps
            step_rows.append(row)
            record.add_rows([row])
            if logger:
                logger.log(step, row)
            # ETA from the median step time so far: one slow step does not swing it.
            eta = statistics.median(r["step_time_s"] for r in step_rows) * (t.steps - step)
            display.console.print(step_line(row, t.steps, eta), markup=False)
        if t.ckpt_every and step % t.ckpt_every == 0:
            checkpoint.save(ckpt_dir, step, engine.save, _trainer_state(cfg, shape, step))
        if step == cfg.debug.preempt_at_step and ctx.rank == cfg.debug.fault_rank:
            os.kill(os.getpid(), signal.SIGUSR1)
    if record:
        record.update(step=last)
        summary = _summary_row(step_rows)
        if summary:
            record.add_rows([summary])
            record.update(summary={"train": summary})
    failed = [r["step"] for r in step_rows if not r["passed"]]
    if failed:
        return Outcome("failed", f"non-finite loss at steps {failed[:5]}", EXIT_FAILED,
                       _summary_printer(record, step_rows))  # fmt: skip
    return Outcome("ok", None, EXIT_OK, _summary_printer(record, step_rows))


def step_line(row: dict[str, Any], steps: int, eta_s: float) -> str:
    """One console line per logged step: loss, learning rate, gradient norm, throughput, step
    time, peak memory and the time left."""
    grad = f"{row['grad_norm']:.3g}" if row.get("grad_norm") is not None else "-"
    return (f"step {row['step']:>5}/{steps}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  grad {grad}  "
            f"{row['tokens_per_s']:,.0f} tok/s  {row['tflops_per_device']:.3f} TFLOP/s/device"
            + (f"  MFU {row['mfu']:.1%}" if row["mfu"] is not None else "")
            + f"  {row['step_time_s'] * 1e3:,.0f} ms  mem {row['peak_memory_bytes'] / 2**30:.2f} GiB"
            + f"  ETA {int(eta_s) // 60:02d}:{int(eta_s) % 60:02d}")  # fmt: skip


def _sync(ctx: DistContext) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def _trainer_state(cfg: RunConfig, shape: ModelShape, step: int) -> dict[str, Any]:
    # The data sampler is a pure function of (seed, step, micro-batch, rank) and the schedule of
    # the step: the step number is all the data position there is.
    return {"step": step, "engine": cfg.engine.name, "model_name": cfg.model.name,
            "model_shape": dataclasses.asdict(shape), "seed": cfg.train.seed}  # fmt: skip


def _step_row(step: int, loss: float, result: Any, seconds: float, tokens: int, world: int, fpt: int, hfu_fpt: int,
              peak: float | None, memory: int) -> dict[str, Any]:  # fmt: skip
    tokens_per_s = tokens / seconds
    per_device = tokens_per_s / world
    tflops = fpt * per_device / 1e12
    hfu_tflops = hfu_fpt * per_device / 1e12
    return {
        "kind": "train", "step": step, "loss": loss, "lr": result.lr, "grad_norm": result.grad_norm,
        "step_time_s": seconds, "tokens_per_s": tokens_per_s, "tokens_per_s_per_device": per_device,
        "tflops_per_device": tflops, "mfu": tflops / peak if peak else None,
        "hfu": hfu_tflops / peak if peak else None, "peak_memory_bytes": memory, "world_size": world,
        "passed": math.isfinite(loss),
    }  # fmt: skip


def _summary_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians over the steps after warmup (at least 10 are wanted for a figure to quote)."""
    measured = [r for r in rows if not r["warmup"]]
    if not measured:
        return None

    def med(key: str) -> float | None:
        values = [r[key] for r in measured if r[key] is not None]
        return statistics.median(values) if values else None

    return {
        "kind": "train_summary", "steps_measured": len(measured), "enough_steps": len(measured) >= 10,
        "step_time_s": med("step_time_s"), "tokens_per_s": med("tokens_per_s"),
        "tokens_per_s_per_device": med("tokens_per_s_per_device"), "tflops_per_device": med("tflops_per_device"),
        "mfu": med("mfu"), "hfu": med("hfu"), "final_loss": rows[-1]["loss"],
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in rows), "world_size": rows[-1]["world_size"],
        "passed": all(r["passed"] for r in rows),
    }  # fmt: skip


def _summary_printer(record: RunRecord | None, rows: list[dict[str, Any]]) -> Any:
    def show() -> None:
        summary = _summary_row(rows) if rows else None
        floor = (record.manifest.get("train") or {}).get("entropy_floor_nats") if record else None
        if rows:
            target = f" (floor {floor:.3f})" if floor is not None else ""
            display.console.print(f"train: loss {rows[0]['loss']:.4f} at step {rows[0]['step']} -> "
                                  f"{rows[-1]['loss']:.4f} at step {rows[-1]['step']}{target}")  # fmt: skip
        if summary:
            mfu = f", MFU {summary['mfu']:.1%}" if summary["mfu"] is not None else ", MFU unknown (no datasheet peak)"
            display.console.print(
                f"train: median over {summary['steps_measured']} steps after warmup: "
                f"{summary['tokens_per_s']:,.0f} tokens/s, {summary['tflops_per_device']:.3f} TFLOP/s per device{mfu}"
            )

    return show


def dry_run(job: Job, record: RunRecord | None) -> Outcome:
    """The plan of a run, from shapes alone: parameters, FLOPs, memory per device."""
    cfg, plan = job.config, job.plan
    world_size = job.world_size or 1
    shape = plan.shape
    t = cfg.train
    accumulation = accumulation_steps(cfg, world_size)
    params = param_count(shape)
    stage = {"deepspeed": cfg.engine.zero_stage, "fsdp": 3, "ddp": 0}[cfg.engine.name]
    memory = memory_plan(shape, dtype=t.dtype, zero_stage=stage, dp_size=world_size, micro_batch=t.micro_batch,
                         seq_len=t.seq_len, activation_checkpointing=t.activation_checkpointing)  # fmt: skip
    fpt = flops_per_token(shape, t.seq_len)
    tokens_per_step = t.micro_batch * accumulation * world_size * t.seq_len
    row = {
        "kind": "train_plan", "model": cfg.model.name, "engine": cfg.engine.name, "zero_stage": stage,
        "world_size": world_size, "n_params": params.total, "n_params_embedding": params.embedding,
        "seq_len": t.seq_len, "tokens_per_step": tokens_per_step, "flops_per_token": fpt,
        "flops_per_step": fpt * tokens_per_step, "memory_per_device_bytes": memory.total,
        "memory_weights_bytes": memory.weights, "memory_gradients_bytes": memory.gradients,
        "memory_optimizer_bytes": memory.optimizer, "memory_activations_bytes": memory.activations, "passed": True,
    }  # fmt: skip
    if record:
        record.add_rows([row])
        record.update(summary={"train_plan": {k: v for k, v in row.items() if k not in ("kind", "passed")}})
    return Outcome("ok", None, EXIT_OK, lambda: display.plan_table(row))
