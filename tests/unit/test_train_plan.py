"""The training plan without ranks (issue 14): the dry run's memory per layout against the hardware,
what to change when it does not fit, the checkpoint's size, train.plan=auto's ranking, and each
bad input refused before anything starts (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import cli
from harness.accept.task import _gpus_per_node
from harness.config.schema import EngineConfig, SlurmConfig, TrainConfig
from harness.perf.layout import Layout
from harness.perf.memory import GIB, memory_plan
from harness.perf.shape import ModelShape, param_count
from harness.perf.workload import Workload
from harness.scheduler.slurm import options
from harness.train.plan import CHECKPOINT_RANK_BYTES, checkpoint_bytes, engine_memory

L405 = ["model=llama3-405b", "train.seq_len=8192", "train.micro_batch=1", "train.global_batch=2048",
        "train.dtype=bfloat16", "train.dry_run=true"]  # fmt: skip
H100 = ["hardware=h100-sxm", "engine=fsdp"]
TINY = ModelShape(vocab_size=256, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=352)


def plan(tmp_path: Path, *argv: str) -> tuple[int, list[dict], dict]:
    """`harness train ARGV` in this process: exit code, rows, manifest."""
    results = tmp_path / "results"
    code = cli.run(["train", *argv, f"results.dir={results}", f"train.ckpt_dir={tmp_path}/ck"])
    runs = list(results.iterdir()) if results.exists() else []
    if not runs:
        return code, [], {}
    (run,) = runs
    rows = [json.loads(line) for line in (run / "rows.jsonl").read_text().splitlines()]
    return code, rows, json.loads((run / "manifest.json").read_text())


def test_plain_fsdp_of_405b_on_2048_h100_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, (row,), manifest = plan(tmp_path, *L405, *H100, "launch.nproc=2048")
    assert code == 0 and row["kind"] == "train_plan" and (row["tp"], row["pp"], row["dp_shard"]) == (1, 1, 2048)
    assert row["fits"] is False and row["device_capacity_bytes"] == 80 * GIB and row["hardware"] == "h100-sxm"
    assert row["memory_per_device_bytes"] > 0.9 * 80 * GIB
    assert row["memory_largest_terms"][0] == "activations"  # 126 layers of 34·s·h bytes without recompute
    assert any("activation_checkpointing" in tip for tip in row["memory_advice"])
    assert any(tip.startswith("train.plan=auto") for tip in row["memory_advice"])
    n = param_count(ModelShape(128256, 16384, 126, 128, 8, 53248)).total
    assert row["checkpoint_bytes"] == 12 * n + CHECKPOINT_RANK_BYTES * 2048  # fp32 weights, m and v
    assert row["estimated_step_time_s"] > 0 and manifest["summary"]["train_plan"]["fits"] is False
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "to fit: turn on train.activation_checkpointing" in out


def test_tp8_pp16_with_recompute_fits_on_16384_h100(tmp_path: Path) -> None:
    code, (row,), _ = plan(tmp_path, *L405, *H100, "launch.nproc=16384", "parallel.tp=8", "parallel.pp=16",
                           "train.activation_checkpointing=true")  # fmt: skip
    assert code == 0 and row["fits"] is True and row["memory_advice"] == []
    assert (row["dp_shard"], row["pp_microbatches"]) == (128, 16)
    assert row["in_flight_microbatches"] == 16 - row["memory_stage"]  # 1F1B: p − stage on the fullest stage
    assert row["pipeline_bubble"] == pytest.approx(15 / 31)
    assert row["memory_per_device_bytes"] <= 0.9 * row["device_capacity_bytes"]


def test_a_cpu_dry_run_reports_memory_without_a_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, (row,), _ = plan(tmp_path, *L405, "launch.nproc=16384", "train.global_batch=16384", "engine.zero_stage=3")
    assert code == 0 and row["fits"] is None and row["device_capacity_bytes"] is None and row["hardware"] is None
    assert row["estimated_step_time_s"] is None and "fits: unknown" in capsys.readouterr().out


def test_plan_auto_ranks_the_layouts_that_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, manifest = plan(tmp_path, *L405, *H100, "launch.nproc=16384", "train.plan=auto")
    assert code == 0
    row, *ranked = rows
    assert row["kind"] == "train_plan" and [r["kind"] for r in ranked] == ["train_plan_layout"] * 5
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5] and all(r["fits"] for r in ranked)
    times = [r["estimated_step_time_s"] for r in ranked]
    assert times == sorted(times) and all(0 < r["estimated_mfu"] < 1 for r in ranked)
    assert row["layout"] == ranked[0]["layout"] and row["fits"] is True
    assert manifest["summary"]["train_plan_layouts"] == [r["layout"] for r in ranked]
    assert "the 5 fastest layouts of 16,384 × h100-sxm" in capsys.readouterr().out


BAD = [
    ([*L405, *H100, "launch.nproc=16384", "parallel.tp=8", "parallel.pp=7"],
     "parallel.dp_shard=-1 (what is left): 16,384 GPUs / (dp_replicate 1 × tp 8 × pp 7 × cp 1 = 56)"),
    ([*L405, *H100, "launch.nproc=16384", "parallel.tp=8", "parallel.dp_shard=3"], "≠ world size 16,384"),
    ([*L405, "hardware=cpu", "launch.nproc=8"], "hardware=cpu has no memory_gib"),
    ([*L405, *H100, "launch.nproc=8", "hardware.memory_gib=null"], "hardware=h100-sxm has no memory_gib"),
    ([*L405, "engine=fsdp", "launch.nproc=16384", "train.plan=auto"], "train.plan=auto: hardware=auto on cpu"),
    ([*L405, "hardware=h100-sxm", "launch.nproc=16384", "train.plan=auto"], "which engine=fsdp trains"),
    ([*L405, *H100, "launch.nproc=16384", "train.plan=auto", "parallel.tp=8"], "parallel.tp=8 is given"),
    ([*L405, *H100, "launch.nproc=16384", "train.plan=auto", "train.global_batch=0"], "needs train.global_batch"),
    ([*L405, *H100, "launch.nproc=8", "train.plan=auto"], "no layout of 8 GPUs fits in 0.9 × 80 GiB"),
    ([*L405, *H100, "launch.nproc=8", "train.plan=fast"], "train.plan='fast'; choices: off, auto"),
    ([*L405, *H100, "launch.nproc=8", "cluster.gpus=16384"], "cluster.gpus=16384 is for harness project"),
    ([*L405, *H100, "launch.nproc=8", "cluster.gpus_per_node=0"], "cluster.gpus_per_node=0: must be"),
    (["launch.nproc=2", "engine=deepspeed", "engine.zero_stage=3", "train.compile=true"],
     "train.compile=true with DeepSpeed ZeRO-3"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_input_exits_2_in_one_line(argv: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code, rows, _ = plan(tmp_path, *argv)
    assert code == 2 and rows == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_checkpoint_bytes_per_engine() -> None:
    """Bytes per parameter as measured on CPU (tiny model, 2 ranks; see checkpoint_bytes)."""
    n = param_count(TINY).total
    cases = [("fsdp", 0, "bfloat16", 12), ("ddp", 0, "float32", 12), ("deepspeed", 0, "float32", 12),
             ("deepspeed", 0, "bfloat16", 14), ("deepspeed", 1, "float32", 16), ("deepspeed", 2, "bfloat16", 14),
             ("deepspeed", 3, "bfloat16", 12)]  # fmt: skip
    for name, stage, dtype, per_param in cases:
        got = checkpoint_bytes(TINY, EngineConfig(name=name, zero_stage=stage), TrainConfig(dtype=dtype), world_size=2)
        assert got == per_param * n + 2 * CHECKPOINT_RANK_BYTES, (name, stage, dtype)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_zero_stages_below_3_keep_what_they_do_not_shard(stage: int) -> None:
    """Weights, gradients and optimizer states of ZeRO-0/1/2 (DeepSpeed, DDP) as the data-parallel
    plan counts them; activations and logits as the layout plan does."""
    layout = Layout().resolve(8, global_batch=16, micro_batch=2)
    work = Workload(seq_len=64, global_batch=16, micro_batch=2, dtype="bfloat16")
    report = engine_memory(TINY, layout, work, engine=EngineConfig(name="deepspeed", zero_stage=stage),
                           memory_gib=1e-4, gpus_per_node=8)  # fmt: skip
    dp_plan = memory_plan(TINY, dtype="bfloat16", zero_stage=stage, dp_size=8, micro_batch=2, seq_len=64)
    assert (report.weights_bytes, report.gradients_bytes, report.optimizer_bytes, report.working_weights_bytes) == (
        dp_plan.weights, dp_plan.gradients, dp_plan.optimizer, 0)  # fmt: skip
    assert report.fits is False and report.advice[0].startswith("shard weights, gradients and optimizer states")


def test_slurm_and_accept_take_gpus_per_node_from_the_cluster() -> None:
    assert options(SlurmConfig(), cluster_gpus_per_node=4).gpus_per_node == 4
    assert options(SlurmConfig(gpus_per_node=2), cluster_gpus_per_node=4).gpus_per_node == 2
    assert options(SlurmConfig()).gpus_per_node is None

    def cfg(accept: int | None) -> Any:
        return SimpleNamespace(accept=SimpleNamespace(gpus_per_node=accept), cluster=SimpleNamespace(gpus_per_node=4))

    assert _gpus_per_node(cfg(None), "cuda") == 4 and _gpus_per_node(cfg(None), "cpu") is None
    assert _gpus_per_node(cfg(8), "cuda") == 8
