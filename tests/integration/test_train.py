"""`harness train` on 2 gloo ranks through the harness's launcher (torch's elastic agent, as
torchrun): every engine, determinism, ZeRO stage equivalence, bit-exact resume, preemption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.config.schema import EngineConfig, TrainConfig
from harness.perf.shape import ModelShape
from harness.train.plan import checkpoint_bytes
from tests.conftest import Run, harness_env, run_cmd

pytestmark = pytest.mark.integration

STEPS = 8
# 2 ranks x micro-batch 2 x 2 accumulation steps = global batch 8
COMMON = [f"train.steps={STEPS}", "train.global_batch=8", "train.micro_batch=2", "train.seq_len=32",
          "launch.nproc=2", "train.warmup_steps=2"]  # fmt: skip
ENGINES = {
    "ddp": ["engine=ddp"],
    "fsdp": ["engine=fsdp"],
    "zero0": ["engine=deepspeed", "engine.zero_stage=0"],
    "zero1": ["engine=deepspeed", "engine.zero_stage=1"],
    "zero2": ["engine=deepspeed", "engine.zero_stage=2"],
    "zero3": ["engine=deepspeed", "engine.zero_stage=3"],
}


TINY = ModelShape(vocab_size=256, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=352, max_seq_len=256)
"""configs/model/tiny.yaml."""


def train(tmp: Path, name: str, *extra: str) -> Run:
    run = run_cmd(["harness", "train", *COMMON, *ENGINES[name], f"results.dir={tmp}/results",
                   f"train.ckpt_dir={tmp}/ck-{name}", *extra], timeout=300)  # fmt: skip
    return run


def losses(run: Run) -> list[float]:
    return [r["loss"] for r in run.rows if r["kind"] == "train"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Each engine once, uninterrupted (the reference the other tests compare with)."""
    tmp = tmp_path_factory.mktemp("train")
    return {name: train(tmp, name) for name in ENGINES}


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_trains(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert run.proc.returncode == 0, run.output
    run.validate()
    manifest = run.manifest
    assert manifest["status"] == "ok" and manifest["world_size"] == 2 and manifest["task"] == "train"
    assert manifest["train"]["accumulation_steps"] == 2 and manifest["train"]["tokens_per_step"] == 8 * 32
    assert "bench" not in manifest["config"]  # only the sections train reads
    steps = [r for r in run.rows if r["kind"] == "train"]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    for row in steps:
        assert row["tokens_per_s"] == pytest.approx(8 * 32 / row["step_time_s"])
        assert row["tokens_per_s_per_device"] == pytest.approx(row["tokens_per_s"] / 2)
        flops = manifest["train"]["flops_per_token"] * row["tokens_per_s_per_device"]
        assert row["tflops_per_device"] == pytest.approx(flops / 1e12)
        assert row["mfu"] is None  # no datasheet peak for a CPU: no guess
        assert row["grad_norm"] is not None and row["grad_norm"] > 0
    (summary,) = [r for r in run.rows if r["kind"] == "train_summary"]
    assert summary["steps_measured"] == STEPS - 2  # warmup steps left out
    assert f"step     1/{STEPS}" in run.proc.stdout and "ETA 00:" in run.proc.stdout  # progress with ETA
    if name.startswith("zero"):
        config = json.loads((run.run_dir / "deepspeed_config.json").read_text())
        assert config["zero_optimization"]["stage"] == int(name[-1])
        assert config["train_batch_size"] == 8 and config["gradient_accumulation_steps"] == 2


def test_same_seed_same_losses_bit_for_bit(runs: dict[str, Run], tmp_path: Path) -> None:
    for name in ("ddp", "zero1"):
        again = train(tmp_path, name)
        assert losses(again) == losses(runs[name]), name


def test_deterministic_mode_on_request(runs: dict[str, Run], tmp_path: Path) -> None:
    """train.deterministic=true (off by default: it costs speed) is recorded; on CPU the losses
    are those of the default run, bit for bit."""
    run = train(tmp_path, "ddp", "train.deterministic=true")
    assert run.proc.returncode == 0, run.output
    assert run.manifest["train"]["deterministic"] is True and runs["ddp"].manifest["train"]["deterministic"] is False
    assert losses(run) == losses(runs["ddp"])


def test_zero_stages_agree_in_fp32(runs: dict[str, Run]) -> None:
    reference = losses(runs["zero0"])
    for stage in ("zero1", "zero2", "zero3"):
        assert losses(runs[stage]) == pytest.approx(reference, rel=1e-5), stage
    assert losses(runs["ddp"]) == pytest.approx(reference, rel=1e-5)  # the same model, data and schedule


@pytest.mark.parametrize("name", ["ddp", "zero1", "fsdp"])
def test_preempted_and_resumed_run_matches_bit_for_bit(runs: dict[str, Run], tmp_path: Path, name: str) -> None:
    first = train(tmp_path, name, "debug.preempt_at_step=4", "debug.fault_rank=1")
    assert first.proc.returncode == 75, first.output  # EXIT_PREEMPTED
    assert first.manifest["status"] == "interrupted" and first.manifest["step"] == 4
    assert (
        first.manifest["error"].startswith("preempted (")
        and "after step 4; checkpoint saved" in first.manifest["error"]
    )
    assert (tmp_path / f"ck-{name}" / "latest").read_text().strip() == "step-00000004"
    check_checkpoint_size(tmp_path / f"ck-{name}" / "step-00000004", name)
    second = train(tmp_path, name)
    assert second.proc.returncode == 0, second.output
    assert second.manifest["train"]["resumed_from_step"] == 4
    assert [r["step"] for r in second.rows if r["kind"] == "train"] == list(range(5, STEPS + 1))
    assert losses(first) + losses(second) == losses(runs[name])


def check_checkpoint_size(folder: Path, name: str) -> None:
    """plan.checkpoint_bytes (the free-space check's estimate) against the folder on disk: DCP's
    per-tensor records (AdamW's step counters, metadata) add a few percent on this tiny model."""
    engine = EngineConfig(name="deepspeed", zero_stage=int(name[-1])) if name.startswith("zero") else None
    expected = checkpoint_bytes(TINY, engine or EngineConfig(name=name), TrainConfig(dtype="float32"), world_size=2)
    on_disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert 0.9 < on_disk / expected < 1.15, (on_disk, expected)


def test_sigterm_from_outside_checkpoints_and_exits_75(tmp_path: Path) -> None:
    cmd = ["harness", "train", *COMMON, "engine=ddp", "train.steps=400", f"results.dir={tmp_path}/results",
           f"train.ckpt_dir={tmp_path}/ck"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    rows: list[Path] = []
    while time.monotonic() < deadline:
        rows = list((tmp_path / "results").glob("*/rows.jsonl"))
        if rows and len(rows[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert rows, "training never logged a step"
    os.kill(proc.pid, signal.SIGTERM)  # what scancel and Slurm's time limit send; the agent forwards it
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, f"{proc.returncode}\n{stdout}\n{stderr}"
    manifest = json.loads((rows[0].parent / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["step"] >= 3
    assert (tmp_path / "ck" / "latest").read_text().strip() == f"step-{manifest['step']:08d}"


def test_under_torchrun(tmp_path: Path, runs: dict[str, Run]) -> None:
    cmd = ["torchrun", "--nproc-per-node", "2", "-m", "harness", "train", *COMMON, *ENGINES["zero1"],
           f"results.dir={tmp_path}", f"train.ckpt_dir={tmp_path}/ck", "train.ckpt_every=4"]  # fmt: skip
    run = run_cmd(cmd, timeout=300)
    assert run.proc.returncode == 0, run.output
    assert run.manifest["launcher"] == "torchrun" and run.manifest["world_size"] == 2
    assert losses(run) == losses(runs["zero1"])  # the same run, whoever starts the ranks
    assert sorted(p.name for p in (tmp_path / "ck" / "step-00000008").glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]


def test_wandb_offline_run_inside_the_run_directory(tmp_path: Path) -> None:
    run = train(tmp_path, "ddp", "logger=wandb", "train.steps=3")
    assert run.proc.returncode == 0, run.output
    offline = list((run.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))  # everything stays on this machine
    assert run.manifest["config"]["logger"]["wandb"]["mode"] == "offline"


def test_dry_run_of_a_large_model(tmp_path: Path) -> None:
    run = run_cmd(["harness", "train", "model=llama3-70b", "train.dry_run=true", "launch.nproc=1024",
                   "train.seq_len=8192", "train.micro_batch=1", "train.dtype=bfloat16", "engine.zero_stage=3",
                   f"results.dir={tmp_path}"], timeout=60)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    run.validate()
    (row,) = run.rows
    assert row["n_params"] == pytest.approx(70.6e9, rel=0.01) and row["world_size"] == 1024
    assert row["flops_per_step"] == row["flops_per_token"] * 1024 * 8192
    assert row["memory_weights_bytes"] == pytest.approx(2 * row["n_params"] / 1024, rel=1e-6)  # ZeRO-3: sharded
    assert row["fits"] is None and row["checkpoint_bytes"] > 12 * row["n_params"]  # no hardware named: no verdict
    assert "memory per device: total" in run.proc.stdout


def test_plan_auto_trains_the_fastest_layout_that_fits(tmp_path: Path) -> None:
    """train.plan=auto on 2 CPU ranks, planned for H100s (a CPU has no memory figure to plan for):
    the layouts ranked, then the first trained."""
    run = run_cmd(["harness", "train", "engine=fsdp", "train.plan=auto", "hardware=h100-sxm", "launch.nproc=2",
                   "train.global_batch=4", "train.micro_batch=1", "train.seq_len=32", "train.steps=3",
                   f"results.dir={tmp_path}/results", f"train.ckpt_dir={tmp_path}/ck"], timeout=300)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    run.validate()
    ranked = [r for r in run.rows if r["kind"] == "train_plan_layout"]
    assert ranked and [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1)) and all(r["fits"] for r in ranked)
    best = {k: ranked[0][k] for k in ("tp", "pp", "cp", "dp_shard", "dp_replicate", "pp_schedule")}
    facts = run.manifest["train"]
    assert {k: facts["layout"][k] for k in best} == best and facts["plan"]["mode"] == "auto"
    assert facts["plan"]["layouts"] == [r["layout"] for r in ranked] and facts["plan"]["hardware"] == "h100-sxm"
    steps = [r for r in run.rows if r["kind"] == "train"]
    assert len(steps) == 3 and all({k: r[k] for k in best} == best for r in steps)
    assert "train.plan=auto: the" in run.proc.stdout


@pytest.mark.parametrize(
    "name,interpret,path",
    [("ddp", "1", "triton"), ("zero3", "0", "torch")],
    ids=["ddp-triton-interpreter", "zero3-torch-fallback"],
)
def test_fused_kernels_match_the_unfused_model(
    runs: dict[str, Run], tmp_path: Path, name: str, interpret: str, path: str
) -> None:
    """model.fused_kernels=true: the same losses as the unfused model within float32 rounding,
    through the Triton kernels (interpreter) or their PyTorch fallback; ZeRO-3 still gathers the
    output weight for the fused loss (the head is called as a module)."""
    env = harness_env(TRITON_INTERPRET=interpret)
    run = run_cmd(["harness", "train", *COMMON, *ENGINES[name], f"results.dir={tmp_path}/results",
                   f"train.ckpt_dir={tmp_path}/ck", "model.fused_kernels=true"], timeout=300, env=env)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    assert run.manifest["train"]["fused_kernels"] == path
    assert losses(run) == pytest.approx(losses(runs[name]), rel=2e-5)
    assert losses(run) != losses(runs[name]) or path == "torch"  # the kernels did run: not bit-identical
