"""The training loop on one rank: steps, the stop checks (preemption, train.exit_after_step),
rows, checkpoints and the summary. `harness.train.task` builds what it needs (`Trainer`)."""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import signal
import statistics
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness import display
from harness.config.schema import RunConfig
from harness.dist import DistContext
from harness.errors import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED, ConfigError
from harness.perf.layout import Layout, bubble_fraction
from harness.perf.shape import ModelShape
from harness.results import RunRecord
from harness.tasks import Outcome
from harness.train import checkpoint, resume
from harness.train.data import first_index

_stop: list[str] = []
"""Names of the signals that asked this rank to stop (SIGTERM, SIGUSR1)."""


def on_stop(signum: int, _frame: Any) -> None:
    """Signal handler: finish the step, checkpoint, exit 75."""
    _stop.append(signal.Signals(signum).name)


@dataclass
class Trainer:
    """What the loop needs, built once by task.run."""

    engine: Any
    data: Any
    shape: ModelShape
    layout: Layout
    logger: Any
    start: int
    """The step the run resumes after (0: from scratch)."""
    accumulation: int
    tokens_per_step: int
    fpt: int
    """Model FLOPs per token."""
    hfu_fpt: int
    """Hardware FLOPs per token (with recompute)."""
    peak: float | None


ETA_WINDOW = 50
"""Recorded steps whose median step time gives the ETA."""
MEDIAN_KEYS = ("step_time_s", "tokens_per_s", "tokens_per_s_per_device", "tflops_per_device", "mfu", "hfu")
"""The figures of a step that the summary gives the median of."""


@dataclass
class StepFigures:
    """What the summary needs of every step, whatever train.log_every records: the figures of
    MEDIAN_KEYS after warmup, 8 bytes each (a million steps cost about 50 MB), the steps whose
    loss was not finite, the peak memory and the last step's row."""

    values: dict[str, array] = field(default_factory=lambda: {key: array("d") for key in MEDIAN_KEYS})
    failed: list[int] = field(default_factory=list)
    peak_memory_bytes: int = 0
    last: dict[str, Any] | None = None

    def add(self, row: dict[str, Any]) -> None:
        """Take one step's `train` row."""
        if not row["passed"]:
            self.failed.append(row["step"])
        self.peak_memory_bytes = max(self.peak_memory_bytes, row["peak_memory_bytes"])
        self.last = row
        if not row["warmup"]:
            for key, values in self.values.items():
                values.append(math.nan if row[key] is None else row[key])

    @property
    def measured(self) -> int:
        """Steps after warmup."""
        return len(self.values["step_time_s"])

    def median(self, key: str) -> float | None:
        """The median of `key` over the steps after warmup (None where no step had it)."""
        known = [v for v in self.values[key] if not math.isnan(v)]
        return statistics.median(known) if known else None


def peak_memory(device: torch.device) -> int:
    """Peak memory of this rank so far, in bytes (device memory on CUDA, the process's RSS on CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def trainer_state(cfg: RunConfig, shape: ModelShape, step: int, world_size: int, global_batch: int) -> dict[str, Any]:
    """trainer.json of a checkpoint. The data sampler is a pure function of (seed, step, global
    sample index): the step number is all the data position there is. The world size says
    whether per-rank RNG states can be restored; the identity, whose run this is."""
    return {"step": step, "steps": cfg.train.steps, "engine": cfg.engine.name, "model_name": cfg.model.name,
            "model_shape": dataclasses.asdict(shape), "seed": cfg.train.seed, "world_size": world_size,
            "identity": resume.identity(cfg, shape, global_batch)}  # fmt: skip


def loop(cfg: RunConfig, ctx: DistContext, record: RunRecord | None, tr: Trainer) -> Outcome:
    """Steps start+1 .. train.steps (or train.exit_after_step), with the stop checks, rows and
    checkpoints, holding the checkpoint folder's lock (rank 0) throughout."""
    t = cfg.train
    stop_after = t.exit_after_step if 0 < t.exit_after_step < t.steps else t.steps
    if tr.start >= stop_after:  # nothing to train: say so, rather than end ok with no rows
        return _already_complete(record, tr.start, t.steps)
    lock = resume.Lock(Path(t.ckpt_dir), record.run_id if record else "") if ctx.rank == 0 else None
    problem = None
    if lock is not None:
        try:
            lock.acquire()
        except (ConfigError, OSError) as exc:
            problem = str(exc)
    problem = checkpoint.agree(problem)
    if problem:  # every rank: exit 2, as when the lock was seen before the ranks started
        raise ConfigError(problem)
    if lock is not None and lock.took_over:
        was = lock.took_over
        line = (f"took over the lock of {t.ckpt_dir} from run {was.get('run_id')} (pid {was.get('pid')} on "
                f"{was.get('host')}), which is no longer running")  # fmt: skip
        display.note(line)
        if record:
            record.add_notes(line)
    try:
        return _loop(cfg, ctx, record, tr, stop_after)
    except checkpoint.CheckpointError as exc:
        return Outcome("failed", str(exc), EXIT_FAILED, None)
    finally:
        if lock is not None:
            lock.release()


def _already_complete(record: RunRecord | None, step: int, steps: int) -> Outcome:
    line = f"already complete at step {step} (train.steps={steps}): nothing to train"
    if record:
        record.update(step=step, summary={"train": {"already_complete_at_step": step}})
        record.add_notes(line)
    return Outcome("ok", None, EXIT_OK, lambda: display.console.print(line, markup=False))


def _loop(cfg: RunConfig, ctx: DistContext, record: RunRecord | None, tr: Trainer, stop_after: int) -> Outcome:
    t = cfg.train
    ckpt_dir = Path(t.ckpt_dir)
    ends: list[dict[str, Any]] = []  # the first and the latest recorded row, for the closing lines
    figures = StepFigures()  # every step, for the summary
    recent: deque[float] = deque(maxlen=ETA_WINDOW)  # the latest recorded step times, for the ETA
    last = tr.start
    global_batch = tr.tokens_per_step // t.seq_len

    def save(step: int) -> None:
        state = trainer_state(cfg, tr.shape, step, ctx.world_size, global_batch)
        checkpoint.save(ckpt_dir, step, tr.engine.save, state)

    for step in range(tr.start + 1, stop_after + 1):
        flag = torch.tensor([1.0 if _stop else 0.0], device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        if flag.item():
            save(last)
            message = f"preempted ({', '.join(_stop) or 'a peer was signalled'}) after step {last}; checkpoint saved"
            if record:
                record.update(step=last)
            return Outcome("interrupted", message, EXIT_PREEMPTED, summary_printer(record, ends, figures, tr.layout))
        row = _step(cfg, ctx, tr, step)
        figures.add(row)
        last = step
        if record and (step % t.log_every == 0 or step == t.steps or step == stop_after):
            ends[:] = [ends[0], row] if ends else [row]
            record.add_rows([row])
            if tr.logger:
                tr.logger.log(step, row)
            # ETA from the median of the latest step times: one slow step does not swing it, and
            # its cost does not grow with the run.
            recent.append(row["step_time_s"])
            eta = statistics.median(recent) * (stop_after - step)
            display.console.print(step_line(row, t.steps, eta), markup=False)
        if (t.ckpt_every and step % t.ckpt_every == 0) or (step == stop_after < t.steps):
            save(step)
        if step == cfg.debug.preempt_at_step and ctx.rank == cfg.debug.fault_rank:
            os.kill(os.getpid(), signal.SIGUSR1)
    return _finish(record, ends, figures, tr, last, stopped_early=stop_after < t.steps)


def _step(cfg: RunConfig, ctx: DistContext, tr: Trainer, step: int) -> dict[str, Any]:
    """One optimizer step; its row (every rank builds it, rank 0 records it)."""
    t = cfg.train
    starts = [first_index(dp_rank=tr.engine.dp_rank, micro=i, micro_batch=t.micro_batch, accumulation=tr.accumulation)
              for i in range(tr.accumulation)]  # fmt: skip
    micro = [tr.data.batch(step, index) for index in starts]
    _sync(ctx)
    started = time.perf_counter()
    result = tr.engine.train_step(step, micro)
    _sync(ctx)
    elapsed = torch.tensor([time.perf_counter() - started], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    loss = result.loss
    if not result.loss_is_global:
        loss_sum = torch.tensor([result.loss], dtype=torch.float64, device=ctx.device)
        dist.all_reduce(loss_sum)
        loss = float(loss_sum) / ctx.world_size
    row = step_row(step, loss, result, float(elapsed), tr, ctx.world_size, peak_memory(ctx.device))
    row["warmup"] = step <= t.warmup_steps
    return row


def _finish(record: RunRecord | None, ends: list[dict[str, Any]], figures: StepFigures, tr: Trainer, last: int, *,
            stopped_early: bool) -> Outcome:  # fmt: skip
    if record:
        record.update(step=last)
        summary = summary_row(figures, tr.layout)
        if summary:
            summary["stopped_at_step"] = last if stopped_early else None
            record.add_rows([summary])
            record.update(summary={"train": summary})
    # Rank 0 judges the run, as it does every check; the others end ok, so that their exit does
    # not make a launcher tear rank 0 down while it closes the record.
    if figures.failed and record is not None:
        message = f"non-finite loss at steps {figures.failed[:5]}"
        return Outcome("failed", message, EXIT_FAILED, summary_printer(record, ends, figures, tr.layout))
    if stopped_early and record:
        display.note(f"stopped after step {last} (train.exit_after_step), checkpoint saved; "
                     "the same command with train.exit_after_step=0 continues the schedule")  # fmt: skip
    return Outcome("ok", None, EXIT_OK, summary_printer(record, ends, figures, tr.layout))


def _sync(ctx: DistContext) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def step_row(step: int, loss: float, result: Any, seconds: float, tr: Trainer, world: int,
             memory: int) -> dict[str, Any]:  # fmt: skip
    """A `train` row: loss, schedule, throughput (TFLOP/s per device over the whole world), memory
    and the layout."""
    tokens_per_s = tr.tokens_per_step / seconds
    per_device = tokens_per_s / world
    tflops = tr.fpt * per_device / 1e12
    hfu_tflops = tr.hfu_fpt * per_device / 1e12
    return {
        "kind": "train", "step": step, "loss": loss, "lr": result.lr, "grad_norm": result.grad_norm,
        "step_time_s": seconds, "tokens_per_s": tokens_per_s, "tokens_per_s_per_device": per_device,
        "tflops_per_device": tflops, "mfu": tflops / tr.peak if tr.peak else None,
        "hfu": hfu_tflops / tr.peak if tr.peak else None, "peak_memory_bytes": memory, "world_size": world,
        **tr.layout.to_row(), "passed": math.isfinite(loss),
    }  # fmt: skip


def summary_row(figures: StepFigures, layout: Layout) -> dict[str, Any] | None:
    """Medians over every step after warmup, logged or not (at least 10 are wanted for a figure
    to quote), the layout and its pipeline bubble (the idle fraction of a step, (p−1)/(m+p−1), or
    (p−1)/(v·m+p−1) interleaved)."""
    if not figures.measured or figures.last is None:
        return None
    last = figures.last
    return {
        "kind": "train_summary", "steps_measured": figures.measured, "enough_steps": figures.measured >= 10,
        **{key: figures.median(key) for key in MEDIAN_KEYS}, "final_loss": last["loss"],
        "peak_memory_bytes": figures.peak_memory_bytes, "world_size": last["world_size"],
        **layout.to_row(), "layout": layout.describe(), "pipeline_bubble": bubble_fraction(layout),
        "passed": not figures.failed,
    }  # fmt: skip


def step_line(row: dict[str, Any], steps: int, eta_s: float) -> str:
    """One console line per logged step: loss, learning rate, gradient norm, throughput, step
    time, peak memory and the time left."""
    grad = f"{row['grad_norm']:.3g}" if row.get("grad_norm") is not None else "-"
    return (f"step {row['step']:>5}/{steps}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  grad {grad}  "
            f"{row['tokens_per_s']:,.0f} tok/s  {row['tflops_per_device']:.3f} TFLOP/s/device"
            + (f"  MFU {row['mfu']:.1%}" if row["mfu"] is not None else "")
            + f"  {row['step_time_s'] * 1e3:,.0f} ms  mem {row['peak_memory_bytes'] / 2**30:.2f} GiB"
            + f"  ETA {int(eta_s) // 60:02d}:{int(eta_s) % 60:02d}")  # fmt: skip


def summary_printer(record: RunRecord | None, ends: list[dict[str, Any]], figures: StepFigures,
                    layout: Layout) -> Any:  # fmt: skip
    """What rank 0 prints after the record is closed: first and last recorded loss, medians."""

    def show() -> None:
        summary = summary_row(figures, layout)
        floor = (record.manifest.get("train") or {}).get("entropy_floor_nats") if record else None
        if ends:
            target = f" (floor {floor:.3f})" if floor is not None else ""
            display.console.print(f"train: loss {ends[0]['loss']:.4f} at step {ends[0]['step']} -> "
                                  f"{ends[-1]['loss']:.4f} at step {ends[-1]['step']}{target}")  # fmt: skip
        if summary:
            mfu = f", MFU {summary['mfu']:.1%}" if summary["mfu"] is not None else ", MFU unknown (no datasheet peak)"
            bubble = f", pipeline bubble {summary['pipeline_bubble']:.1%}" if layout.pp > 1 else ""
            display.console.print(
                f"train: median over {summary['steps_measured']} steps after warmup: "
                f"{summary['tokens_per_s']:,.0f} tokens/s, {summary['tflops_per_device']:.3f} TFLOP/s per device"
                f"{mfu}{bubble} ({summary['layout']})"
            )

    return show
