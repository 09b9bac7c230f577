"""Checkpoint folders with an atomic `latest` pointer: a checkpoint is complete or absent.

Layout: <ckpt_dir>/step-00000010/ (the engine's files and trainer.json), and <ckpt_dir>/latest,
a one-line file naming the newest complete folder, replaced atomically after every rank has
written its part. A crash while saving leaves `latest` on the previous checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.results.atomic import write_atomic

LATEST = "latest"
TRAINER = "trainer.json"


def step_dir(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step-{step:08d}"


def latest(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_dir / pointer.read_text().strip()
    return path if (path / TRAINER).is_file() else None


def save(ckpt_dir: Path, step: int, engine_save: Any, trainer_state: dict[str, Any]) -> Path:
    """All ranks: write the engine's state and their RNG states, then rank 0 writes trainer.json
    and moves `latest`."""
    path = step_dir(ckpt_dir, step)
    if dist.get_rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    engine_save(path)
    torch.save(rng_state(), path / f"rng-{dist.get_rank()}.pt")
    dist.barrier()  # every rank's part is on disk
    if dist.get_rank() == 0:
        write_atomic(path / TRAINER, json.dumps(trainer_state, indent=2))
        write_atomic(ckpt_dir / LATEST, path.name + "\n")
    dist.barrier()
    return path


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
        state = torch.load(file, weights_only=False)
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        return "restored per rank"
    torch.manual_seed(derived_seed(seed, step, rank))  # seeds every device's generator too
    why = f"written by {saved_world} ranks, resumed on {world_size}" if saved_world != world_size else "no saved state"
    return f"derived from (seed, step, rank): {why}"


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / TRAINER).read_text())
