"""What every engine gives the trainer: one optimizer step over a list of micro-batches, and
checkpoints. The schedule (linear warmup, cosine decay) and the optimizer (AdamW) are shared, so
the engines differ only in how they distribute the model."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.config.schema import EngineConfig, TrainConfig

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def lr_at(step: int, train: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (1-based): linear warmup, then cosine decay."""
    if train.warmup_steps and step <= train.warmup_steps:
        return train.lr * step / train.warmup_steps
    span = max(1, train.steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / span)
    floor = train.lr * train.min_lr_ratio
    return floor + (train.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw(params: Any, train: TrainConfig) -> torch.optim.Optimizer:
    # foreach=False: the same arithmetic order on every engine and run (bit-exact resume).
    return torch.optim.AdamW(params, lr=train.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=train.weight_decay,
                             foreach=False)  # fmt: skip


@dataclass
class StepResult:
    loss: float
    """Mean loss over this rank's micro-batches."""
    grad_norm: float | None
    lr: float


class Engine(ABC):
    """A distributed model with its optimizer."""

    name: str

    def __init__(self, model: torch.nn.Module, train: TrainConfig, engine: EngineConfig, device: torch.device) -> None:
        self.train_cfg = train
        self.engine_cfg = engine
        self.device = device
        self.dtype = COMPUTE_DTYPES[train.dtype]

    @abstractmethod
    def train_step(self, step: int, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> StepResult:
        """Forward and backward over the micro-batches, then one optimizer step at lr_at(step)."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write this engine's state into folder `path` (every rank calls it)."""

    @abstractmethod
    def load(self, path: Path) -> None:
        """Restore the state written by save()."""

    def autocast(self) -> Any:
        """Mixed precision for the PyTorch engines: master weights fp32, compute in the dtype."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
