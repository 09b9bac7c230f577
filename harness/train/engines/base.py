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
import torch.distributed as dist

from harness.config.schema import EngineConfig, TrainConfig

DCP_DIR = "dcp"
"""The folder of a checkpoint that torch.distributed.checkpoint writes (engines fsdp and ddp)."""
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
    """Mean loss over this rank's micro-batches, or over the whole global batch when `loss_is_global`."""
    grad_norm: float | None
    lr: float
    loss_is_global: bool = False
    """The engine already reduced the loss over the ranks (model-parallel ranks hold parts of it)."""


class Engine(ABC):
    """A distributed model with its optimizer."""

    name: str

    dp_rank: int
    """This rank's index among the data-parallel ranks: which slice of the global batch it reads."""

    def __init__(self, model: torch.nn.Module | None, train: TrainConfig, engine: EngineConfig,
                 device: torch.device) -> None:  # fmt: skip
        self.train_cfg = train
        self.engine_cfg = engine
        self.device = device
        self.dtype = COMPUTE_DTYPES[train.dtype]
        self.dp_rank = dist.get_rank()  # every rank is a data-parallel rank unless the engine says otherwise

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
