"""Training engines: deepspeed (the default), fsdp, ddp."""

from __future__ import annotations

import torch

from harness.config.schema import EngineConfig, TrainConfig
from harness.train.engines.base import Engine, StepResult, lr_at
from harness.train.engines.ddp import DdpEngine
from harness.train.engines.deepspeed import DeepSpeedEngine
from harness.train.engines.fsdp import FsdpEngine

ENGINES = ("deepspeed", "fsdp", "ddp")


def build_engine(model: torch.nn.Module, train: TrainConfig, engine: EngineConfig, device: torch.device, *,
                 micro_batch: int, accumulation: int) -> Engine:  # fmt: skip
    """The engine `engine.name` around `model` (DeepSpeed itself is imported only when it is built)."""
    if engine.name == "ddp":
        return DdpEngine(model, train, engine, device)
    if engine.name == "fsdp":
        return FsdpEngine(model, train, engine, device)
    return DeepSpeedEngine(model, train, engine, device, micro_batch=micro_batch, accumulation=accumulation)


__all__ = ["ENGINES", "Engine", "StepResult", "build_engine", "lr_at"]
