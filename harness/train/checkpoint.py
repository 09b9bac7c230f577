"""Checkpoint folders that are complete or absent, with the size and sha256 of every file.

Layout: <ckpt_dir>/step-00000010/ (the engine's files, each rank's rng-N.pt, and trainer.json),
and <ckpt_dir>/latest, a one-line file naming the newest checkpoint. A checkpoint is written in
<ckpt_dir>/.step-00000010.partial/ and renamed when every rank's part is on disk and its files
are listed in trainer.json: a crash or a full disk while saving leaves the previous checkpoints
as they were, and never a folder that looks complete. Which checkpoint a run resumes from, and
whether it may, is `harness.train.resume`'s business.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from harness.results.atomic import write_atomic
from harness.units import human_bytes

LATEST = "latest"
TRAINER = "trainer.json"
PARTIAL = ".partial"
_CHUNK = 8 << 20


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (a full disk, an I/O error): one line says so."""


class Damaged(ValueError):
    """A checkpoint folder that cannot be used; the message says why, in one line."""


def step_dir(ckpt_dir: Path, step: int) -> Path:
    """The folder of step `step` under ckpt_dir: step-00000010."""
    return ckpt_dir / f"step-{step:08d}"


def step_of(path: Path) -> int | None:
    """10 for step-00000010; None for anything else."""
    name = path.name
    if not name.startswith("step-") or not name[5:].isdigit():
        return None
    return int(name[5:])


def complete(ckpt_dir: Path) -> list[Path]:
    """The checkpoint folders of ckpt_dir (renamed into place), newest step first."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0, reverse=True)


def latest(ckpt_dir: Path) -> Path | None:
    """Where `latest` points (the folder may be missing or damaged: see harness.train.resume)."""
    pointer = ckpt_dir / LATEST
    try:
        name = pointer.read_text().strip()
    except OSError:
        return None
    return ckpt_dir / name if name else None


def read_trainer_state(path: Path) -> dict[str, Any]:
    """trainer.json of a checkpoint; Damaged when it is missing or not JSON."""
    try:
        state = json.loads((path / TRAINER).read_text())
    except FileNotFoundError:
        raise Damaged(f"{path.name} has no {TRAINER}") from None
    except (OSError, ValueError) as exc:
        raise Damaged(f"{path.name}/{TRAINER} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise Damaged(f"{path.name}/{TRAINER} has no step")
    return state


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in chunks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def listing(folder: Path) -> list[str]:
    """The files of a checkpoint folder (relative names, sorted), trainer.json left out."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != TRAINER)


def describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """{name: {bytes, sha256}} of `names` in `folder`."""
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": file_digest(folder / name)} for name in names}


def check_files(folder: Path, files: dict[str, dict[str, Any]], names: list[str] | None = None,
                digests: bool = True) -> str | None:  # fmt: skip
    """Why the listed files (or `names` of them) do not match their record, in one line; None
    when they match. digests=False checks presence and sizes only (cheap: before ranks start)."""
    for name in names if names is not None else sorted(files):
        want = files[name]
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{folder.name}/{name} is missing"
        if size != want["bytes"]:
            return f"{folder.name}/{name} has {size:,} bytes, {want['bytes']:,} were written"
        if digests and file_digest(path) != want["sha256"]:
            return f"{folder.name}/{name} does not match its sha256"
    return None


def share(names: list[str], rank: int, world: int) -> list[str]:
    """This rank's part of a list of files to hash (every rank hashes a part, at once)."""
    return names[rank::world]


def save(ckpt_dir: Path, step: int, engine_save: Any, trainer_state: dict[str, Any]) -> Path:
    """All ranks: write the engine's state and their RNG states into a partial folder; list and
    hash every file (each rank a share); rank 0 writes trainer.json, renames the folder into place
    and moves `latest`. CheckpointError (one line, on every rank) when any part could not be
    written; the partial folder is removed and earlier checkpoints stay as they were."""
    rank, world = dist.get_rank(), dist.get_world_size()
    final = step_dir(ckpt_dir, step)
    partial = ckpt_dir / f".{final.name}{PARTIAL}"
    failure: str | None = None
    if rank == 0:
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        except OSError as exc:
            failure = _why(exc, ckpt_dir)
    failure = agree(failure)
    files: dict[str, Any] = {}
    if failure is None:
        try:
            engine_save(partial)
            torch.save(rng_state(), partial / f"rng-{rank}.pt")
        except (Exception, CheckpointException) as exc:  # DCP's own error is a BaseException
            failure = _why(exc, ckpt_dir)
        failure = agree(failure)
    if failure is None:
        dist.barrier()  # every rank's part is on disk
        mine: dict[str, Any] = {}
        try:
            mine = describe_files(partial, share(listing(partial), rank, world))
        except OSError as exc:
            failure = _why(exc, ckpt_dir)
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (mine, failure))
        failure = next((f for _m, f in parts if f), None)
        for part, _f in parts:
            files.update(part)
    if failure is None and rank == 0:
        try:
            write_atomic(partial / TRAINER, json.dumps({**trainer_state, "files": files}, indent=2))
            _into_place(partial, final)
            write_atomic(ckpt_dir / LATEST, final.name + "\n")
        except OSError as exc:
            failure = _why(exc, ckpt_dir)
    failure = agree(failure)
    if failure is not None:
        if rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        before = next((p.name for p in complete(ckpt_dir) if p != final), None)
        kept = f"; {before} is intact" if before else ""
        raise CheckpointError(f"checkpoint of step {step} could not be written in {ckpt_dir}: {failure}{kept}")
    return final


def _into_place(partial: Path, final: Path) -> None:
    """Rename the finished folder to its name (replacing an older copy of the same step, which a
    preemption right after a periodic checkpoint writes again)."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _why(exc: BaseException, ckpt_dir: Path) -> str:
    """One line: the error (a DCP failure's first rank's own), and the free space there."""
    if isinstance(exc, CheckpointException) and exc.failures:
        _rank, (inner, _trace) = next(iter(sorted(exc.failures.items(), key=lambda kv: kv[0])))
        exc = inner if isinstance(inner, BaseException) else exc
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0] if text else ''}".strip()
    if "unexpected pos" in what:  # torch's zip writer, when a write came back short
        what += " (a file was written short)"
    with contextlib.suppress(OSError):
        what += f"; {human_bytes(shutil.disk_usage(ckpt_dir).free)} free there"
    return what


def agree(failure: str | None) -> str | None:
    """All ranks: the first rank's failure text, if any rank had one (so that all fail alike)."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, failure)
    return next((p for p in parts if p), None)


def rng_state() -> dict[str, Any]:
    """This rank's random generators (the data sampler needs none: it is seeded per batch)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def derived_seed(seed: int, step: int, rank: int) -> int:
    """A seed for rank `rank` resuming after `step` when its saved generator state cannot be used."""
    return (seed * 1_000_003 + step) * 1_000_003 + rank


def restore_rng(path: Path, *, world_size: int, seed: int, step: int) -> str:
    """Put back this rank's generators as they were at the checkpoint when the world size is the
    one that wrote it; otherwise (another layout with another world, or no file) seed them from
    (seed, step, rank). Returns what was done, for the manifest."""
    rank = dist.get_rank()
    file = path / f"rng-{rank}.pt"
    saved_world = read_trainer_state(path).get("world_size", world_size)
    if saved_world == world_size and file.is_file():
        state = torch.load(file, weights_only=True)  # tensors only: nothing in a checkpoint folder runs code
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        return "restored per rank"
    torch.manual_seed(derived_seed(seed, step, rank))  # seeds every device's generator too
    why = f"written by {saved_world} ranks, resumed on {world_size}" if saved_world != world_size else "no saved state"
    return f"derived from (seed, step, rank): {why}"


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the filesystem that holds `folder` (or its nearest existing parent)."""
    path = Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
