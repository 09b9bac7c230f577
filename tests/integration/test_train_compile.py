"""train.compile=true (issue 14) on 2 gloo ranks: each transformer block compiled by inductor (its
C++ backend on this CPU) trains the same losses as eager within 1e-4, on a data-parallel layout
(with activation checkpointing around the compiled blocks) and on a TP layout with the fused
kernels; neither has a graph break.

Every layout's eager losses equal the 1-rank run's within 1e-5 (tests/integration/test_parallel.py),
so one eager reference serves both. Inductor's cache lives in one temporary folder for the module:
the second compiled run reuses what the first compiled (a cold compile takes 10-20 s here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.perf.shape import ModelShape
from harness.train.model import Transformer
from tests.conftest import Run, harness_env, run_cmd

pytestmark = pytest.mark.integration

COMMON = ["engine=fsdp", "launch.nproc=2", "train.steps=3", "train.global_batch=4", "train.micro_batch=1",
          "train.seq_len=32", "train.warmup_steps=2", "train.resume=never"]  # fmt: skip
TOLERANCE = 1e-4
"""Nats: inductor fuses and reorders float32 arithmetic, so its losses are not bit-identical."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return harness_env(TORCHINDUCTOR_CACHE_DIR=str(tmp_path_factory.mktemp("inductor")))


def train(tmp: Path, env: dict[str, str], *extra: str) -> Run:
    run = run_cmd(["harness", "train", *COMMON, *extra, f"results.dir={tmp}/results", f"train.ckpt_dir={tmp}/ck"],
                  timeout=300, env=env)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    return run


def losses(run: Run) -> list[float]:
    return [r["loss"] for r in run.rows if r["kind"] == "train"]


@pytest.fixture(scope="module")
def eager(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Run:
    return train(tmp_path_factory.mktemp("eager"), env, "parallel.dp_shard=2")


def check_compiled(run: Run, eager: Run) -> None:
    assert losses(run) == pytest.approx(losses(eager), abs=TOLERANCE)
    facts = run.manifest["train"]
    assert facts["compile"] is True and facts["compile_graph_breaks"] == 0 and facts["compile_graphs"] >= 1
    assert eager.manifest["train"]["compile"] is False


def test_compiled_data_parallel_matches_eager(eager: Run, tmp_path: Path, env: dict[str, str]) -> None:
    run = train(tmp_path, env, "parallel.dp_shard=2", "train.compile=true", "train.activation_checkpointing=true")
    check_compiled(run, eager)


def test_compiled_tensor_parallel_with_fused_kernels_matches_eager(
    eager: Run, tmp_path: Path, env: dict[str, str]
) -> None:
    """TP 2 with sequence parallelism: the DTensor hooks of the block's layers are traced into its
    graph, and the fused ops (custom ops) leave it whole."""
    run = train(tmp_path, env, "parallel.tp=2", "train.compile=true", "model.fused_kernels=true")
    check_compiled(run, eager)
    assert run.manifest["train"]["layout"]["tp"] == 2


def test_a_fused_block_has_no_graph_break() -> None:
    """Counted by dynamo's explain on the block's forward, as apply_compile compiles it."""
    shape = ModelShape(vocab_size=256, dim=64, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=32)
    model = Transformer(shape, fused=True)
    block = model.layers["0"]
    x = torch.randn(2, 16, shape.dim, requires_grad=True)
    explained = torch._dynamo.explain(block.forward)(x, model.rope_cos, model.rope_sin)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
