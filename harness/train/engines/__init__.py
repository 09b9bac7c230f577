"""Training engines: deepspeed (the default), fsdp (the native engine for every parallel
layout), ddp. deepspeed and ddp are data-parallel only."""

from __future__ import annotations

import torch

from harness.config.schema import EngineConfig, TrainConfig
from harness.perf.shape import ModelShape
from harness.train.engines.base import Engine, StepResult, lr_at
from harness.train.engines.ddp import DdpEngine
from harness.train.engines.deepspeed import DeepSpeedEngine
from harness.train.engines.fsdp import FsdpEngine
from harness.train.mesh import ParallelDims
from harness.train.model import Transformer, materialize
from harness.train.parallelize import apply_compile

ENGINES = ("deepspeed", "fsdp", "ddp")
DATA_PARALLEL_ONLY = ("deepspeed", "ddp")
"""Engines that refuse tp, pp, cp and dp_replicate > 1."""


def build_engine(shape: ModelShape, train: TrainConfig, engine: EngineConfig, device: torch.device, *,
                 dims: ParallelDims | None, fused: bool, micro_batch: int, accumulation: int) -> Engine:  # fmt: skip
    """The engine `engine.name` with its model (DeepSpeed itself is imported only when it is
    built). fsdp builds and lays out its own parts on `dims`; the others get the whole model,
    with the same weights (`model.init_weights`)."""
    if engine.name == "fsdp":
        assert dims is not None, "engine=fsdp runs on a device mesh"
        return FsdpEngine(shape, train, engine, device, dims=dims, fused=fused)
    with torch.device("meta"):
        model = Transformer(shape, activation_checkpointing=train.activation_checkpointing, fused=fused)
    materialize(model, device, train.seed)
    if train.compile:  # before DDP or DeepSpeed wrap the model, as parallelize does before FSDP
        apply_compile(model)
    if engine.name == "ddp":
        return DdpEngine(model, train, engine, device)
    return DeepSpeedEngine(model, train, engine, device, micro_batch=micro_batch, accumulation=accumulation)


__all__ = ["DATA_PARALLEL_ONLY", "ENGINES", "Engine", "StepResult", "build_engine", "lr_at"]
