"""Parallel layouts of `harness train` through the harness's own launcher (issue 13): every layout
trains the same global batch as one rank does, so its losses and gradient norms match the
1-rank run within 1e-5; a checkpoint written in one layout resumes in another.

The layouts are a plain list of (name, ranks, overrides), as torchtitan lists its integration
tests. CPU, gloo, fp32, the tiny preset with 4 layers (so that two pipeline ranks can hold two
stages each), global batch 4 of micro-batch 1 (m = 4 micro-batches per pipeline at dp 1),
sequences of 32 tokens, 3 steps (the first two warm up).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run, run_cmd

pytestmark = pytest.mark.integration

COMMON = ["engine=fsdp", "model.n_layers=4", "train.global_batch=4", "train.micro_batch=1", "train.seq_len=32",
          "train.warmup_steps=2"]  # fmt: skip
STEPS = 3
REL = 1e-5
GRAD_REL = 1e-4
"""Gradient norms: AdamW's first updates are about lr·sign(g), so rounding in the tiniest
gradients (TP splits the matmuls) moves step 3's norm by a few 1e-5; a wrong gradient moves it
by far more."""

LAYOUTS = [
    ("tp2", 2, ["parallel.tp=2"]),
    ("dp_shard2", 2, ["parallel.dp_shard=2"]),
    ("hsdp2x2", 4, ["parallel.dp_replicate=2", "parallel.dp_shard=2"]),
    ("pp2_1f1b", 2, ["parallel.pp=2"]),
    ("pp2_gpipe", 2, ["parallel.pp=2", "parallel.pp_schedule=gpipe"]),
    ("pp2_interleaved", 2, ["parallel.pp=2", "parallel.pp_schedule=interleaved_1f1b"]),
    ("cp2", 2, ["parallel.cp=2"]),
    ("dp2_tp2", 4, ["parallel.dp_shard=2", "parallel.tp=2"]),
    ("tp2_pp2", 4, ["parallel.tp=2", "parallel.pp=2"]),
    ("dp2_tp2_pp2", 8, ["parallel.dp_shard=2", "parallel.tp=2", "parallel.pp=2"]),
    # The fused ops under TP (their PyTorch fallback here): the norms on local rows, the fused
    # cross-entropy with the output weight gathered over TP.
    ("tp2_fused", 2, ["parallel.tp=2", "model.fused_kernels=true"]),
]


def train(tmp: Path, name: str, nproc: int, *extra: str, steps: int = STEPS) -> Run:
    return run_cmd(["harness", "train", *COMMON, f"train.steps={steps}", f"launch.nproc={nproc}",
                    f"results.dir={tmp}/results-{name}", f"train.ckpt_dir={tmp}/ck-{name}", *extra],
                   timeout=300)  # fmt: skip


def steps(run: Run) -> list[dict]:
    return [r for r in run.rows if r["kind"] == "train"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One rank, 6 steps: every layout's first 3 steps (the same warmup; the cosine only differs
    from step 4 on, whose loss depends on step 3's update) and the resumed steps 4-6."""
    run = train(tmp_path_factory.mktemp("reference"), "reference", 1, "train.resume=never", steps=6)
    assert run.proc.returncode == 0, run.output
    return run


@pytest.mark.parametrize(("name", "nproc", "overrides"), LAYOUTS, ids=[name for name, _, _ in LAYOUTS])
def test_layout_matches_one_rank(reference: Run, tmp_path: Path, name: str, nproc: int, overrides: list[str]) -> None:
    run = train(tmp_path, name, nproc, "train.resume=never", *overrides)
    assert run.proc.returncode == 0, run.output
    run.validate()
    got, want = steps(run), steps(reference)[:STEPS]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=REL)
    assert [r["grad_norm"] for r in got] == pytest.approx([r["grad_norm"] for r in want], rel=GRAD_REL)
    train_manifest = run.manifest["train"]
    layout = train_manifest["layout"]
    for key in ("tp", "pp", "cp", "dp_shard", "dp_replicate", "pp_schedule", "pp_microbatches"):
        assert all(r[key] == layout[key] for r in got), key  # every step row records the layout
    mesh = train_manifest["mesh"]
    assert mesh["dims"] == {d: layout[d] for d in ("pp", "dp_replicate", "dp_shard", "cp", "tp")}
    assert mesh["tp_within_node"] is True
    assert train_manifest["tokens_per_step"] == 4 * 32  # the global batch, whatever the layout
    (summary,) = [r for r in run.rows if r["kind"] == "train_summary"]
    p, m, v = layout["pp"], layout["pp_microbatches"], layout["pp_virtual_stages"]
    expected = 0.0 if p == 1 else (p - 1) / ((v if layout["pp_schedule"] == "interleaved_1f1b" else 1) * m + p - 1)
    assert summary["pipeline_bubble"] == pytest.approx(expected)
    if "model.fused_kernels=true" in overrides:
        assert train_manifest["cross_entropy_tp"].startswith("output weight all-gathered over TP")


def test_resume_in_another_layout(reference: Run, tmp_path: Path) -> None:
    """6 steps at tp=2 stopped after step 3 (train.exit_after_step), resumed at dp_shard=2 from
    its checkpoint: steps 4-6 are the uninterrupted run's, and the schedule followed train.steps."""
    first = train(tmp_path, "staged", 2, "parallel.tp=2", "train.exit_after_step=3", steps=6)
    assert first.proc.returncode == 0, first.output
    assert first.manifest["status"] == "ok" and first.manifest["step"] == 3
    assert [r["step"] for r in steps(first)] == [1, 2, 3]
    (summary,) = [r for r in first.rows if r["kind"] == "train_summary"]
    assert summary["stopped_at_step"] == 3
    assert (tmp_path / "ck-staged" / "latest").read_text().strip() == "step-00000003"
    second = train(tmp_path, "staged", 2, "parallel.dp_shard=2", steps=6)
    assert second.proc.returncode == 0, second.output
    assert second.manifest["train"]["resumed_from_step"] == 3
    assert second.manifest["train"]["rng_on_resume"] == "restored per rank"  # the same world size
    want = steps(reference)
    got = steps(first) + steps(second)
    assert [r["step"] for r in got] == list(range(1, 7))
    assert [r["lr"] for r in got] == pytest.approx([r["lr"] for r in want], rel=1e-12)
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=REL)
