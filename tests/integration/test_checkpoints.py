"""Checkpoints through the real command: another run's folder is refused, a damaged newest
checkpoint falls back to the previous one, a finished run says it is complete, and a disk that
fills during a checkpoint fails in one line with the earlier checkpoint intact."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.train import checkpoint
from tests.conftest import IN_CI, run_cmd

pytestmark = pytest.mark.integration

TRAIN = ["harness", "train", "engine=ddp", "launch.nproc=2", "train.global_batch=4", "train.micro_batch=2",
         "train.seq_len=16", "train.steps=4", "train.ckpt_every=2"]  # fmt: skip


def train(tmp_path: Path, ckpt_dir: Path, *extra: str):
    return run_cmd([*TRAIN, f"train.ckpt_dir={ckpt_dir}", f"results.dir={tmp_path / 'results'}", *extra], timeout=240)


def test_a_folder_of_another_run_is_refused_and_a_finished_run_says_so(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    first = train(tmp_path, ckpt, "train.seed=1")
    assert first.proc.returncode == 0, first.output
    assert [p.name for p in checkpoint.complete(ckpt)] == ["step-00000004", "step-00000002"]
    # Another seed and learning rate: not this run's folder.
    other = train(tmp_path, ckpt, "train.seed=2", "train.lr=0.001")
    assert other.proc.returncode == 2, other.output
    (line,) = other.proc.stderr.strip().splitlines()
    assert "holds step-00000004 of another run (" in line and "train.seed 1 ≠ 2" in line and "train.lr" in line
    # The same run again: nothing to train, said so, exit 0, and not an ok run with no rows.
    again = train(tmp_path, ckpt, "train.seed=1")
    assert again.proc.returncode == 0, again.output
    assert "already complete at step 4 (train.steps=4): nothing to train" in again.proc.stdout
    assert again.manifest["summary"]["train"] == {"already_complete_at_step": 4}
    assert "already complete at step 4" in " ".join(again.manifest["notes"])


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    assert train(tmp_path, ckpt, "train.exit_after_step=4", "train.steps=6").proc.returncode == 0
    newest = checkpoint.step_dir(ckpt, 4)
    victim = next(p for p in sorted(newest.rglob("*")) if p.is_file() and p.name != checkpoint.TRAINER)
    victim.write_bytes(victim.read_bytes()[: max(1, victim.stat().st_size // 2)])
    run = train(tmp_path, ckpt, "train.steps=6")
    assert run.proc.returncode == 0, run.output
    assert "checkpoint step-00000004 skipped:" in run.proc.stdout and "resuming from step-00000002" in run.proc.stdout
    assert run.manifest["train"]["resumed_from_step"] == 2
    assert [r["step"] for r in run.rows if r["kind"] == "train"] == [3, 4, 5, 6]
    assert any("skipped" in note for note in run.manifest["notes"])


def test_a_disk_that_fills_during_a_checkpoint_fails_in_one_line(tmp_path: Path) -> None:
    ckpt = tmp_path / "small"
    ckpt.mkdir()
    # Room for one and a half checkpoints of this model (measured: one takes 5.6 MB).
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8600k", "tmpfs", str(ckpt)], capture_output=True,
                          text=True)  # fmt: skip
    if made.returncode != 0:
        message = f"cannot mount a tmpfs: {made.stderr.strip()}"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    try:
        run = train(tmp_path, ckpt)
        assert run.proc.returncode == 1, run.output
        assert "Traceback" not in run.output
        assert "checkpoint of step 4 could not be written in" in run.manifest["error"]
        assert "step-00000002 is intact" in run.manifest["error"]
        assert [p.name for p in checkpoint.complete(ckpt)] == ["step-00000002"]
        assert not [p for p in ckpt.iterdir() if p.name.endswith(checkpoint.PARTIAL)]
        state = json.loads((checkpoint.step_dir(ckpt, 2) / checkpoint.TRAINER).read_text())
        assert checkpoint.check_files(checkpoint.step_dir(ckpt, 2), state["files"]) is None
    finally:
        subprocess.run(["umount", str(ckpt)], check=False)
