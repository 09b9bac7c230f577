"""The default training run learns visibly: the synthetic data has a known entropy floor, and 40
steps of `harness train` on 2 CPU ranks bring the loss well down towards it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import run_cmd

pytestmark = pytest.mark.integration


def test_the_default_run_learns_towards_its_floor(tmp_path: Path) -> None:
    run = run_cmd(["harness", "train", "train.steps=40", f"results.dir={tmp_path}/results",
                   f"train.ckpt_dir={tmp_path}/ck"], timeout=300)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    losses = [r["loss"] for r in run.rows if r["kind"] == "train"]
    assert len(losses) == 40
    assert losses[0] == pytest.approx(math.log(256), rel=0.03)  # an untrained model guesses uniformly
    assert losses[-1] <= 0.75 * losses[0], losses
    train = run.manifest["train"]
    assert train["entropy_floor_nats"] == pytest.approx(1.0627, abs=1e-3) and losses[-1] > train["entropy_floor_nats"]
    assert train["deterministic"] is False  # throughput by default (train.deterministic=true on request)
    log = (run.run_dir / "console.log").read_text()
    assert "step    40/40" in log and "grad " in log and "(floor 1.063)" in log
    assert "console.log" in run.manifest["files"]
