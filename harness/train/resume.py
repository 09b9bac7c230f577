"""Which checkpoint a run continues from, and whether it may: never a lost or overwritten
checkpoint, never someone else's.

- Every checkpoint lists its files with size and sha256 (harness.train.checkpoint). The newest
  that verifies is used; a damaged one (a truncated file, a dangling or damaged `latest`) is
  skipped with a warning line the manifest keeps.
- A folder holding checkpoints none of which verifies is never trained over from step 0: the run
  is refused (exit 2) with the reasons.
- A checkpoint records the identity of its run: what changes the trajectory (engine, model,
  data, seed, optimizer, learning-rate schedule, global batch, sequence length, dtype); not the
  layout (it may change on resume) nor train.steps (extending a run is allowed, with a warning
  that the schedule's tail changes). resume=auto refuses another identity, naming the keys;
  train.resume=PATH takes it, with a warning.
- A lock file keeps a second live run out of a checkpoint folder; a dead run's lock is taken over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.schema import RunConfig
from harness.errors import ConfigError
from harness.perf.shape import ModelShape
from harness.train import checkpoint
from harness.train.checkpoint import Damaged
from harness.units import human_bytes

LOCK = ".lock"
LOCK_REFRESH_S = 30.0
"""How often a live run touches its lock."""
LOCK_STALE_S = 180.0
"""A lock of another host untouched for this long belongs to a dead run."""


def identity(cfg: RunConfig, shape: ModelShape, global_batch: int | None) -> dict[str, Any]:
    """What makes two runs the same trajectory (dotted keys, plain values)."""
    t, d = cfg.train, cfg.data
    found: dict[str, Any] = {
        "engine.name": cfg.engine.name, "model.name": cfg.model.name, "model.shape": dataclasses.asdict(shape),
        "data.kind": d.kind, "data.path": d.path if d.kind != "synthetic" else "", "data.dtype": d.dtype,
        "train.seed": t.seed, "train.lr": t.lr, "train.min_lr_ratio": t.min_lr_ratio,
        "train.warmup_steps": t.warmup_steps, "train.weight_decay": t.weight_decay, "train.grad_clip": t.grad_clip,
        "train.seq_len": t.seq_len, "train.dtype": t.dtype,
    }  # fmt: skip
    if global_batch is not None:
        found["train.global_batch"] = global_batch
    return found


def saved_identity(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's identity; for one written before identities were recorded, what its
    trainer.json did record (engine, model, seed)."""
    if state.get("identity") is not None:
        return dict(state["identity"])
    legacy = {"engine.name": state.get("engine"), "model.name": state.get("model_name"),
              "model.shape": state.get("model_shape"), "train.seed": state.get("seed")}  # fmt: skip
    return {k: v for k, v in legacy.items() if v is not None}


def differences(saved: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """'train.seed 0 ≠ 1' for each key both know and disagree on (the checkpoint's value first)."""
    out = []
    for key in sorted(set(saved) & set(mine)):
        if saved[key] != mine[key]:
            shown = ("another shape", "this one") if key == "model.shape" else (saved[key], mine[key])
            out.append(f"{key} {shown[0]} ≠ {shown[1]}")
    return out


@dataclass
class Choice:
    """Where a run starts."""

    path: Path | None = None
    """The checkpoint to load; None: from step 0."""
    step: int = 0
    warnings: list[str] = field(default_factory=list)
    """Lines for the console and the manifest's notes."""


def choose(cfg: RunConfig, mine: dict[str, Any], *, verify: Any = None) -> Choice:
    """The checkpoint this run continues from. `verify(folder, files) -> reason | None` checks a
    candidate's files (default: sizes only, which needs no ranks); ConfigError (exit 2, one line)
    when the run must not start."""
    t = cfg.train
    verify = verify or (lambda folder, files: checkpoint.check_files(folder, files, digests=False))
    if t.resume == "never":
        return Choice()
    if t.resume != "auto":
        path = Path(t.resume)
        state, problem = _inspect(path, verify)
        if problem:
            raise ConfigError(f"train.resume={t.resume}: {problem}")
        choice = Choice(path, state["step"])
        diff = differences(saved_identity(state), mine)
        if diff:
            choice.warnings.append(f"resuming from {path}, a checkpoint of another run: {'; '.join(diff)}")
        return _extended(choice, state, t.steps)
    ckpt_dir = Path(t.ckpt_dir)
    folders = checkpoint.complete(ckpt_dir)
    pointer = checkpoint.latest(ckpt_dir)
    if not folders:
        if pointer is not None:
            raise ConfigError(f"train.ckpt_dir={ckpt_dir}: `latest` names {pointer.name}, which is missing, and no "
                              "other checkpoint is there; use train.resume=never to start afresh")  # fmt: skip
        return Choice()
    warnings, reasons = [], []
    for folder in folders:
        state, problem = _inspect(folder, verify)
        if problem:
            reasons.append(problem)
            warnings.append(f"checkpoint {folder.name} skipped: {problem}")
            continue
        diff = differences(saved_identity(state), mine)
        if diff:
            raise ConfigError(
                f"train.ckpt_dir={ckpt_dir} holds {folder.name} of another run ({'; '.join(diff)}); use another "
                f"train.ckpt_dir, or train.resume={folder} to continue from it anyway"
            )
        if pointer is not None and pointer != folder:
            where = "is missing" if not pointer.exists() else "is not the newest usable checkpoint"
            warnings.append(f"`latest` names {pointer.name}, which {where}; resuming from {folder.name}")
        return _extended(Choice(folder, state["step"], warnings), state, t.steps)
    raise ConfigError(
        f"train.ckpt_dir={ckpt_dir} holds {len(folders)} checkpoint(s) and none can be used ({'; '.join(reasons)}); "
        "training from step 0 would overwrite them: use another train.ckpt_dir or train.resume=never"
    )


def _inspect(folder: Path, verify: Any) -> tuple[dict[str, Any], str | None]:
    try:
        state = checkpoint.read_trainer_state(folder)
    except Damaged as exc:
        return {}, str(exc)
    files = state.get("files")
    if files is None:  # written before checkpoints listed their files: nothing to verify
        return state, None
    return state, verify(folder, files)


def _extended(choice: Choice, state: dict[str, Any], steps: int) -> Choice:
    saved = state.get("steps")
    if saved is not None and saved != steps and choice.step < steps:
        choice.warnings.append(f"train.steps={steps}, the checkpoint's run planned {saved}: the learning-rate "
                               "schedule's tail changes")  # fmt: skip
    return choice


# ---------------------------------------------------------------- the lock


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (tells a reused pid from the one that locked)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict[str, Any], mtime: float) -> bool:
    if owner.get("host") == socket.gethostname():
        pid = int(owner.get("pid", 0))
        return pid > 0 and _start_time(pid) is not None and _start_time(pid) == owner.get("start")
    return time.time() - mtime < LOCK_STALE_S


def holder(ckpt_dir: Path) -> dict[str, Any] | None:
    """The live run that holds ckpt_dir's lock, or None (no lock, or a dead run's)."""
    path = Path(ckpt_dir) / LOCK
    try:
        owner = json.loads(path.read_text())
        mtime = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and _alive(owner, mtime) else None


class Lock:
    """ckpt_dir/.lock, held by rank 0 of the run that trains into ckpt_dir; touched every
    LOCK_REFRESH_S so that a run on another host can tell a live holder from a dead one."""

    def __init__(self, ckpt_dir: Path, run_id: str) -> None:
        self.path = Path(ckpt_dir) / LOCK
        self.owner = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                      "start": _start_time(os.getpid())}  # fmt: skip
        self._stop = threading.Event()
        self.took_over: dict[str, Any] | None = None

    def acquire(self) -> None:
        """Take the lock; ConfigError when a live run holds it. A dead run's lock is taken over
        (self.took_over says whose)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = self.path.with_name(f"{LOCK}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
        mine.write_text(json.dumps(self.owner))
        try:
            for _attempt in range(3):
                try:  # link: the lock appears whole, owner and all, or not at all (O_EXCL on NFS too)
                    os.link(mine, self.path)
                except FileExistsError:
                    self._take_over_if_dead()
                    continue
                threading.Thread(target=self._refresh, name="harness-ckpt-lock", daemon=True).start()
                return
        finally:
            with contextlib.suppress(OSError):
                mine.unlink()
        raise ConfigError(f"train.ckpt_dir={self.path.parent}: could not take its lock; another run is starting there")

    def _take_over_if_dead(self) -> None:
        """Remove a dead run's lock, or raise ConfigError naming the live one. Two runs may judge
        the same lock dead: each moves it aside first and removes only the lock it judged, so
        the second cannot remove the lock the first has just taken."""
        try:
            judged = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            judged = None
        live = holder(self.path.parent)
        if live is not None:
            raise ConfigError(
                f"train.ckpt_dir={self.path.parent} is in use by run {live.get('run_id')} (pid "
                f"{live.get('pid')} on {live.get('host')}); wait for it, or use another train.ckpt_dir"
            )
        aside = self.path.with_name(f"{LOCK}.{os.getpid()}.{uuid.uuid4().hex[:8]}.dead")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        if moved == judged:
            self.took_over = judged if isinstance(judged, dict) else None
        else:  # another run took the lock between the look and the move: give it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        with contextlib.suppress(OSError):
            aside.unlink()

    def _refresh(self) -> None:
        while not self._stop.wait(LOCK_REFRESH_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Stop refreshing and remove the lock if it is still this run's."""
        self._stop.set()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("pid") == self.owner["pid"]:
                self.path.unlink()


# ---------------------------------------------------------------- the two moments of a resume


def before_ranks(cfg: RunConfig, shape: ModelShape, global_batch: int | None, checkpoint_bytes: int | None) -> Choice:
    """Before any rank starts (pure: reads only): the lock, the free space for one more
    checkpoint, and the checkpoint to continue from by the files' sizes. ConfigError (exit 2)."""
    ckpt_dir = Path(cfg.train.ckpt_dir)
    live = holder(ckpt_dir)
    if live is not None:
        raise ConfigError(f"train.ckpt_dir={ckpt_dir} is in use by run {live.get('run_id')} (pid {live.get('pid')} "
                          f"on {live.get('host')}); wait for it, or use another train.ckpt_dir")  # fmt: skip
    free = checkpoint.free_bytes(ckpt_dir)
    if checkpoint_bytes and free is not None and free < checkpoint_bytes:
        raise ConfigError(
            f"train.ckpt_dir={ckpt_dir} has {human_bytes(free)} free and a checkpoint of this run takes "
            f"{human_bytes(checkpoint_bytes)}; free space there or use another train.ckpt_dir"
        )
    return choose(cfg, identity(cfg, shape, global_batch))


def on_ranks(cfg: RunConfig, shape: ModelShape, global_batch: int, rank: int, world: int) -> Choice:
    """Every rank, together: the checkpoint to continue from, each candidate's files verified by
    size and sha256 (each rank hashes a share of them; all ranks see the same verdict)."""

    def verify(folder: Path, files: dict[str, Any]) -> str | None:
        names = checkpoint.share(sorted(files), rank, world)
        return checkpoint.agree(checkpoint.check_files(folder, files, names))

    return choose(cfg, identity(cfg, shape, global_batch), verify=verify)
