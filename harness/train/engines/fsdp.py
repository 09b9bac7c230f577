"""The native engine for every layout (issue 13): FSDP2 (`fully_shard`) over the data-parallel
ranks (HSDP with dp_replicate), DTensor tensor parallelism with sequence parallelism and loss
parallel, context parallelism, and pipeline parallelism with torch.distributed.pipelining, all
on one device mesh (`harness.train.mesh`, laid out by `harness.train.parallelize`). With no
model parallelism it is plain FSDP2: weights, gradients and optimizer states sharded (ZeRO-3).

Checkpoints go through torch.distributed.checkpoint keyed by parameter name (the optimizer state
flattened to names too), so a checkpoint written in one layout loads in another: DCP reshards.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import loss_parallel

from harness.config.schema import EngineConfig, TrainConfig
from harness.perf.shape import ModelShape
from harness.train import pipeline
from harness.train.context_parallel import shard_sequence
from harness.train.engines.base import DCP_DIR, Engine, StepResult, adamw, lr_at
from harness.train.mesh import ParallelDims
from harness.train.model import Transformer
from harness.train.parallelize import parallelize

_FLAT = StateDictOptions(flatten_optimizer_state_dict=True)


class FsdpEngine(Engine):
    name = "fsdp"

    def __init__(self, shape: ModelShape, train: TrainConfig, engine: EngineConfig, device: torch.device, *,
                 dims: ParallelDims, fused: bool) -> None:  # fmt: skip
        super().__init__(None, train, engine, device)
        self.dims = dims
        self.dp_rank = dims.dp_rank
        layout = dims.layout
        self.stage_ids = pipeline.stage_ids(layout, dims.coords["pp"]) if layout.pp > 1 else [0]
        n_stages = layout.pp * (layout.pp_virtual_stages or 1)
        # Each part (the model, or one of this rank's pipeline stages) is built on the meta
        # device and cut; parallelize allocates only this rank's tensor-parallel slice of it.
        self.parts: list[Transformer] = []
        for stage in self.stage_ids:
            with torch.device("meta"):
                part = Transformer(shape, activation_checkpointing=train.activation_checkpointing, fused=fused)
            if n_stages > 1:
                pipeline.cut(part, stage, n_stages)
            self.parts.append(
                parallelize(part, dims, device=device, seed=train.seed, param_dtype=self.dtype, compile=train.compile)
            )
        self.optimizers = [adamw(part.parameters(), train) for part in self.parts]
        self.schedule = None
        if layout.pp > 1:
            self.schedule = pipeline.build_schedule(self.parts, self.stage_ids, layout, device=device,
                                                    group=dims.pp_group)  # fmt: skip
        # Loss parallel: the logits stay sharded over the vocabulary, forward and backward.
        self.loss_parallel = layout.tp > 1 and not fused

    @property
    def model(self) -> Transformer:
        """The model (without a pipeline: its one part)."""
        return self.parts[0]

    def _shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's two chunks of the sequence under context parallelism."""
        return shard_sequence(tensor.to(self.device), self.dims.coords["cp"], self.dims.layout.cp)

    def _context(self) -> Any:
        return loss_parallel() if self.loss_parallel else contextlib.nullcontext()

    def train_step(self, step: int, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> StepResult:
        with self._context():
            loss, holds = self._pipelined(micro_batches) if self.schedule else self._accumulated(micro_batches)
        grad_norm = self._clip()
        lr = lr_at(step, self.train_cfg)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return StepResult(_global_mean(loss, holds, self.device), grad_norm, lr, loss_is_global=True)

    def _accumulated(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, bool]:
        total = 0.0
        for i, (x, y) in enumerate(micro_batches):
            # Reduce-scatter gradients only after the last micro-batch of the step.
            self.model.set_requires_gradient_sync(i == len(micro_batches) - 1)
            loss = self.model(self._shard(x), self._shard(y)) / len(micro_batches)
            loss.backward()
            total += float(loss.detach())
        return total, True

    def _pipelined(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, bool]:
        # The schedule splits the batch back into the same micro-batches (pp_microbatches = the
        # accumulation count, which validation ensures), and sends the targets to the last stage.
        x = self._shard(torch.cat([x for x, _ in micro_batches]))
        y = self._shard(torch.cat([y for _, y in micro_batches]))
        losses: list[torch.Tensor] = []
        args = (x,) if pipeline.has_first_stage(self.stage_ids) else ()
        self.schedule.step(*args, targets=y, target=y, losses=losses, return_outputs=False)
        if not pipeline.has_last_stage(self.stage_ids, self.dims.layout):
            return 0.0, False
        return float(torch.stack([loss.detach().float() for loss in losses]).mean()), True

    def _clip(self) -> float:
        groups = by_mesh([p for part in self.parts for p in part.parameters() if p.grad is not None])
        norm = total_grad_norm(groups, self.dims.pp_group if self.dims.layout.pp > 1 else None)
        clip = self.train_cfg.grad_clip or float("inf")
        for params in groups:  # foreach ops take one mesh at a time
            torch.nn.utils.clip_grads_with_norm_(params, clip, norm)
        return float(norm)

    def _state(self) -> dict[str, Any]:
        model, optim = {}, {}
        for part, optimizer in zip(self.parts, self.optimizers, strict=True):
            model.update(get_model_state_dict(part))
            optim.update(get_optimizer_state_dict(part, optimizer, options=_FLAT))
        return {"model": model, "optimizer": optim}

    def save(self, path: Path) -> None:
        dcp.save(self._state(), checkpoint_id=str(path / DCP_DIR))

    def load(self, path: Path) -> None:
        state = self._state()
        dcp.load(state, checkpoint_id=str(path / DCP_DIR))  # reshards into this layout
        for part, optimizer in zip(self.parts, self.optimizers, strict=True):
            # Each part takes its own names from the merged dicts (the others are other stages').
            set_model_state_dict(part, state["model"], options=StateDictOptions(strict=False))
            set_optimizer_state_dict(part, optimizer, state["optimizer"], options=_FLAT)


def by_mesh(params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Parameters grouped by the mesh of their gradients (without sequence parallelism the norms'
    weights are sharded over dp only, the others over dp × tp)."""
    groups: dict[Any, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault(p.grad.device_mesh if isinstance(p.grad, DTensor) else None, []).append(p)
    return list(groups.values())


def total_grad_norm(groups: list[list[torch.Tensor]], pp_group: Any = None) -> torch.Tensor:
    """The L2 norm of all gradients of the model, across every parallel dimension: per mesh, the
    DTensor norm reduced over its shards; squares summed over the meshes, then over the
    pipeline stages (torchtitan's clip_grad_norm_ with pp)."""
    squares = torch.zeros((), dtype=torch.float32, device=groups[0][0].device if groups else None)
    for params in groups:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], 2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares = squares + norm.float() ** 2
    if pp_group is not None:
        dist.all_reduce(squares, group=pp_group)
    return squares.sqrt()


def _global_mean(loss: float, holds: bool, device: torch.device) -> float:
    """The mean loss over the global batch: every rank that computed the loss (the last pipeline
    stage; each TP rank holds the same value, each CP and DP rank its own tokens' mean over equal
    token counts) contributes it once."""
    pair = torch.tensor([loss if holds else 0.0, 1.0 if holds else 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(pair)
    return float(pair[0] / pair[1]) if pair[1] else math.nan
