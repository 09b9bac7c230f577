"""Checkpoints are never lost, never overwritten and never someone else's (harness.train.resume,
harness.train.checkpoint): verified files, fallback to the newest that verifies, refusal over
unusable checkpoints, identities, the lock, free space, and writes that are whole or absent."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import load
from harness.config.schema import RunConfig
from harness.errors import ConfigError
from harness.train import checkpoint, resume
from harness.train.task import model_shape


def config(tmp_path: Path, *overrides: str) -> RunConfig:
    """A train config; built with resume=never (so that loading it does not already decide), then
    given the resume the test asks for (default auto)."""
    wanted = next((o.split("=", 1)[1] for o in overrides if o.startswith("train.resume=")), "auto")
    rest = [o for o in overrides if not o.startswith("train.resume=")]
    argv = ["train", f"train.ckpt_dir={tmp_path / 'ck'}", f"results.dir={tmp_path / 'results'}", "launch.nproc=1",
            "train.resume=never", *rest]  # fmt: skip
    cfg = load.load(load.parse(argv))[0].config
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=wanted))


def write_checkpoint(cfg: RunConfig, step: int, payload: bytes = b"weights" * 100, steps: int | None = None) -> Path:
    """A checkpoint as checkpoint.save leaves it: files, trainer.json listing them, `latest`."""
    ckpt_dir = Path(cfg.train.ckpt_dir)
    folder = checkpoint.step_dir(ckpt_dir, step)
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "__0_0.distcp").write_bytes(payload)
    (folder / "rng-0.pt").write_bytes(b"rng" * 50)
    shape = model_shape(cfg)
    files = checkpoint.describe_files(folder, checkpoint.listing(folder))
    state = {"step": step, "steps": steps or cfg.train.steps, "world_size": 1,
             "identity": resume.identity(cfg, shape, None), "files": files}  # fmt: skip
    (folder / checkpoint.TRAINER).write_text(json.dumps(state))
    (ckpt_dir / checkpoint.LATEST).write_text(folder.name + "\n")
    return folder


def choose(cfg: RunConfig, digests: bool = True) -> resume.Choice:
    def verify(folder: Path, files: dict) -> str | None:
        return checkpoint.check_files(folder, files, digests=digests)

    return resume.choose(cfg, resume.identity(cfg, model_shape(cfg), None), verify=verify)


def test_the_newest_checkpoint_is_used(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_checkpoint(cfg, 10)
    newest = write_checkpoint(cfg, 20)
    got = choose(cfg)
    assert (got.path, got.step, got.warnings) == (newest, 20, [])


def test_a_truncated_file_in_the_newest_falls_back_to_the_previous_with_a_warning(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    older = write_checkpoint(cfg, 10)
    newest = write_checkpoint(cfg, 20)
    with open(newest / "rng-0.pt", "r+b") as handle:
        handle.truncate(10)
    got = choose(cfg, digests=False)  # sizes alone find a truncation (before the ranks start)
    assert (got.path, got.step) == (older, 10)
    assert got.warnings[0] == "checkpoint step-00000020 skipped: step-00000020/rng-0.pt has 10 bytes, 150 were written"
    assert "`latest` names step-00000020, which is not the newest usable checkpoint" in got.warnings[1]


def test_a_changed_file_of_the_same_size_is_caught_by_its_sha256(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    older = write_checkpoint(cfg, 10)
    newest = write_checkpoint(cfg, 20)
    (newest / "model" / "__0_0.distcp").write_bytes(b"Weights" * 100)
    assert choose(cfg, digests=False).path == newest  # same size: only the digest tells
    got = choose(cfg)
    assert got.path == older and "does not match its sha256" in got.warnings[0]


@pytest.mark.parametrize("damage", ["missing", "truncated json", "dangling latest"])
def test_a_damaged_trainer_json_or_latest_is_skipped(tmp_path: Path, damage: str) -> None:
    cfg = config(tmp_path)
    older = write_checkpoint(cfg, 10)
    newest = write_checkpoint(cfg, 20)
    if damage == "missing":
        (newest / checkpoint.TRAINER).unlink()
    elif damage == "truncated json":
        text = (newest / checkpoint.TRAINER).read_text()
        (newest / checkpoint.TRAINER).write_text(text[: len(text) // 2])
    else:
        (Path(cfg.train.ckpt_dir) / checkpoint.LATEST).write_text("step-00000030\n")
    got = choose(cfg)
    if damage == "dangling latest":
        assert got.path == newest and got.warnings == [
            "`latest` names step-00000030, which is missing; resuming from step-00000020"]  # fmt: skip
    else:
        assert got.path == older
        assert got.warnings[0].startswith("checkpoint step-00000020 skipped: step-00000020")


def test_checkpoints_none_of_which_verifies_are_never_trained_over(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for step in (10, 20):
        folder = write_checkpoint(cfg, step)
        (folder / "rng-0.pt").unlink()
    with pytest.raises(ConfigError, match=r"holds 2 checkpoint\(s\) and none can be used .*rng-0.pt is missing"):
        choose(cfg)
    assert choose(config(tmp_path, "train.resume=never")).path is None  # the way out it names


def test_a_latest_pointing_nowhere_in_an_empty_folder_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    Path(cfg.train.ckpt_dir).mkdir()
    (Path(cfg.train.ckpt_dir) / checkpoint.LATEST).write_text("step-00000030\n")
    with pytest.raises(ConfigError, match="names step-00000030, which is missing"):
        choose(cfg)


def test_auto_refuses_another_runs_checkpoint_naming_the_keys(tmp_path: Path) -> None:
    write_checkpoint(config(tmp_path, "train.seed=1", "train.lr=0.003"), 30)
    mine = config(tmp_path, "train.seed=2", "train.lr=0.001")
    with pytest.raises(ConfigError) as refused:
        choose(mine)
    assert "of another run (train.lr 0.003 ≠ 0.001; train.seed 1 ≠ 2)" in str(refused.value)
    assert "train.resume=" in str(refused.value)
    # Named explicitly, it is taken, with a warning.
    folder = checkpoint.step_dir(Path(mine.train.ckpt_dir), 30)
    got = choose(config(tmp_path, "train.seed=2", "train.lr=0.001", f"train.resume={folder}"))
    assert got.path == folder and "a checkpoint of another run: train.lr 0.003 ≠ 0.001" in got.warnings[0]


def test_the_layout_and_more_steps_are_not_another_run(tmp_path: Path) -> None:
    write_checkpoint(config(tmp_path, "train.steps=30"), 30)
    got = choose(config(tmp_path, "train.steps=60", "train.micro_batch=1"))
    assert got.step == 30
    assert got.warnings == [
        "train.steps=60, the checkpoint's run planned 30: the learning-rate schedule's tail changes"
    ]


def test_the_lock_keeps_a_live_run_out_and_a_dead_runs_lock_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    first = resume.Lock(folder, "run-a")
    first.acquire()
    try:
        with pytest.raises(ConfigError, match=r"is in use by run run-a \(pid \d+ on "):
            resume.Lock(folder, "run-b").acquire()
        with pytest.raises(ConfigError, match="is in use by run run-a"):
            resume.before_ranks(config(tmp_path), model_shape(config(tmp_path)), None, None)
    finally:
        first.release()
    assert not (folder / resume.LOCK).exists()
    # A lock left by a process that has ended (a crash): taken over, and whose it was is known.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / resume.LOCK).write_text(json.dumps({"run_id": "run-c", "host": socket.gethostname(),
                                                  "pid": int(dead.stdout), "start": "1"}))  # fmt: skip
    second = resume.Lock(folder, "run-d")
    second.acquire()
    assert second.took_over and second.took_over["run_id"] == "run-c"
    second.release()
    # Another host's lock counts as live until it has not been touched for LOCK_STALE_S.
    (folder / resume.LOCK).write_text(json.dumps({"run_id": "run-e", "host": "elsewhere", "pid": 1}))
    assert resume.holder(folder)["run_id"] == "run-e"
    old = time.time() - resume.LOCK_STALE_S - 1
    os.utime(folder / resume.LOCK, (old, old))
    assert resume.holder(folder) is None


def test_two_runs_taking_over_one_dead_lock_do_not_both_hold_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B judges the dead run's lock dead; before B removes it, A takes it over. B must then find
    A's live lock, not remove it (before: both ran, each thinking it held the folder)."""
    folder = tmp_path / "ck"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / resume.LOCK).write_text(json.dumps({"run_id": "run-dead", "host": socket.gethostname(),
                                                  "pid": int(dead.stdout), "start": "1"}))  # fmt: skip
    real_holder, first = resume.holder, resume.Lock(folder, "run-a")

    def b_looks_then_a_takes_over(ckpt_dir: Path) -> dict | None:
        monkeypatch.setattr(resume, "holder", real_holder)
        judged = real_holder(ckpt_dir)  # None: the dead run's lock, as B sees it
        first.acquire()  # A, meanwhile
        return judged

    monkeypatch.setattr(resume, "holder", b_looks_then_a_takes_over)
    try:
        with pytest.raises(ConfigError, match="is in use by run run-a"):
            resume.Lock(folder, "run-b").acquire()
        assert json.loads((folder / resume.LOCK).read_text())["run_id"] == "run-a"
        assert first.took_over is not None and first.took_over["run_id"] == "run-dead"
        assert sorted(p.name for p in folder.iterdir()) == [resume.LOCK]  # nothing left aside
    finally:
        first.release()


def test_a_checkpoint_that_cannot_fit_is_refused_before_training(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    free = checkpoint.free_bytes(Path(cfg.train.ckpt_dir))
    with pytest.raises(ConfigError, match=r"free and a checkpoint of this run takes 1\.\d+ TiB; free space there"):
        resume.before_ranks(cfg, model_shape(cfg), None, (free or 0) + 2**40)
    assert resume.before_ranks(cfg, model_shape(cfg), None, 1024).path is None


@pytest.fixture
def one_rank(tmp_path: Path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_save_lists_every_file_and_a_failed_save_leaves_the_previous_intact(tmp_path: Path, one_rank: None) -> None:
    ckpt_dir = tmp_path / "saved"

    def engine_save(folder: Path) -> None:
        (folder / "model").mkdir()
        (folder / "model" / "shard").write_bytes(b"x" * 1000)

    first = checkpoint.save(ckpt_dir, 10, engine_save, {"step": 10, "world_size": 1})
    state = checkpoint.read_trainer_state(first)
    assert set(state["files"]) == {"model/shard", "rng-0.pt"} and state["files"]["model/shard"]["bytes"] == 1000
    assert checkpoint.check_files(first, state["files"]) is None

    def full_disk(folder: Path) -> None:
        (folder / "model").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(checkpoint.CheckpointError) as failed:
        checkpoint.save(ckpt_dir, 20, full_disk, {"step": 20, "world_size": 1})
    assert str(failed.value).startswith(f"checkpoint of step 20 could not be written in {ckpt_dir}: OSError: ")
    assert "No space left on device" in str(failed.value) and str(failed.value).endswith("step-00000010 is intact")
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest", "step-00000010"]  # no partial folder left
    assert checkpoint.latest(ckpt_dir) == first
