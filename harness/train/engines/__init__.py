"""Training engines: deepspeed (the default), fsdp, ddp."""

from __future__ import annotations

import torch

from harness.config.schema import EngineConfig, TrainConfig
from harness.train.engines.base import Engine, StepResult, lr_at

ENGINES = ("deepspeed", "fsdp", "ddp")


def build_engine(model: torch.nn.Module, train: TrainConfig, engine: EngineConfig, device: torch.device, *,
                 micro_batch: int, accumulation: int) -> Engine:  # fmt: skip
    """The engine `engine.name` around `model` (imported on use: DeepSpeed is slow to import)."""
    if engine.name == "ddp":
        from harness.train.engines.ddp import DdpEngine

        return DdpEngine(model, train, engine, device)
    if engine.name == "fsdp":
        from harness.train.engines.fsdp import FsdpEngine

        return FsdpEngine(model, train, engine, device)
    from harness.train.engines.deepspeed import DeepSpeedEngine

    return DeepSpeedEngine(model, train, engine, device, micro_batch=micro_batch, accumulation=accumulation)


__all__ = ["ENGINES", "Engine", "StepResult", "build_engine", "lr_at"]
