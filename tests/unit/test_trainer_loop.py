"""The training loop in one process (gloo, world size 1) with an engine whose step time and loss
the test chooses: the summary and the failure check take every step, not only the recorded ones."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from harness import load
from harness.dist import DistContext, LaunchEnv
from harness.perf.layout import Layout
from harness.results import RunRecord
from harness.tasks import Outcome
from harness.train.engines.base import StepResult
from harness.train.task import model_shape
from harness.train.trainer import StepFigures, Trainer, loop, summary_row

STEPS, WARMUP, LOG_EVERY = 12, 2, 5
SLOW_S, FAST_S = 0.06, 0.001


class TimedEngine:
    """Sleeps SLOW_S on the steps that get recorded (every LOG_EVERY-th and the last), FAST_S on
    the others; the loss of the steps in `nan_at` is NaN."""

    dp_rank = 0

    def __init__(self, nan_at: frozenset[int] = frozenset()) -> None:
        self.nan_at = nan_at

    def train_step(self, step: int, micro_batches: list) -> StepResult:
        time.sleep(SLOW_S if step % LOG_EVERY == 0 or step == STEPS else FAST_S)
        return StepResult(math.nan if step in self.nan_at else 1.0 / step, 1.0, 1e-3)

    def save(self, path: Path) -> None:  # train.ckpt_every=0: only a stop would save
        raise AssertionError("no checkpoint expected")


class Batches:
    """Batches whose content the timed engine never reads."""

    def batch(self, step: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[DistContext]:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield DistContext(LaunchEnv("local", 0, 1, 0, 1), torch.device("cpu"), "gloo")
    dist.destroy_process_group()


def run(tmp_path: Path, ctx: DistContext, engine: TimedEngine, *, rank0: bool = True) -> tuple[Outcome, list[dict]]:
    """The loop on STEPS steps; the outcome and the rows recorded (none where `rank0` is False:
    a rank that does not record)."""
    argv = ["train", "model=tiny", f"train.steps={STEPS}", f"train.warmup_steps={WARMUP}",
            f"train.log_every={LOG_EVERY}", "train.ckpt_every=0", "train.resume=never", "launch.nproc=1",
            f"train.ckpt_dir={tmp_path / 'ck'}", f"results.dir={tmp_path / 'results'}"]  # fmt: skip
    cfg = load.load(load.parse(argv))[0].config
    results = tmp_path / "results"
    record = RunRecord.create(results, task="train", config={}, launcher="local", world_size=1) if rank0 else None
    trainer = Trainer(engine=engine, data=Batches(), shape=model_shape(cfg), layout=Layout().resolve(1),
                      logger=None, start=0, accumulation=1, tokens_per_step=4, fpt=100, hfu_fpt=100,
                      peak=None)  # fmt: skip
    outcome = loop(cfg, ctx, record, trainer)
    return outcome, RunRecord.load(record.path).rows if record else []


def test_summary_takes_every_step_after_warmup_not_only_the_recorded_ones(tmp_path: Path, world) -> None:
    outcome, rows = run(tmp_path, world, TimedEngine())
    assert outcome.status == "ok", outcome.error
    assert [r["step"] for r in rows if r["kind"] == "train"] == [5, 10, 12]
    (summary,) = [r for r in rows if r["kind"] == "train_summary"]
    assert summary["steps_measured"] == STEPS - WARMUP and summary["enough_steps"]
    # 7 of the 10 measured steps are fast: their median, not the recorded (slow) steps' one
    assert summary["step_time_s"] < SLOW_S / 2, summary["step_time_s"]
    assert summary["tokens_per_s"] > 4 / (SLOW_S / 2)
    assert summary["final_loss"] == pytest.approx(1.0 / STEPS)


def test_a_non_finite_loss_at_an_unrecorded_step_fails_the_run(tmp_path: Path, world) -> None:
    outcome, rows = run(tmp_path, world, TimedEngine(nan_at=frozenset({7})))
    assert outcome.status == "failed" and outcome.error == "non-finite loss at steps [7]"
    (summary,) = [r for r in rows if r["kind"] == "train_summary"]
    assert summary["passed"] is False


def test_only_the_recording_rank_fails_the_run_on_a_non_finite_loss(tmp_path: Path, world) -> None:
    # The others end ok: a launcher seeing them fail could tear rank 0 down while it records.
    outcome, rows = run(tmp_path, world, TimedEngine(nan_at=frozenset({7})), rank0=False)
    assert outcome.status == "ok" and rows == []


def test_summary_medians_skip_unknown_figures() -> None:
    figures = StepFigures()
    for step, seconds in enumerate([9.0, 1.0, 3.0, 2.0], start=1):
        figures.add({"step": step, "loss": 1.0, "passed": True, "warmup": step == 1, "peak_memory_bytes": step,
                     "world_size": 1, "step_time_s": seconds, "tokens_per_s": 4 / seconds,
                     "tokens_per_s_per_device": 4 / seconds, "tflops_per_device": 1.0, "mfu": None,
                     "hfu": None})  # fmt: skip
    summary = summary_row(figures, Layout().resolve(1))
    assert summary is not None and summary["steps_measured"] == 3
    assert summary["step_time_s"] == 2.0 and summary["tokens_per_s"] == 2.0
    assert summary["mfu"] is None and summary["peak_memory_bytes"] == 4
    assert summary_row(StepFigures(), Layout().resolve(1)) is None
