"""PyTorch FSDP2 (`fully_shard`): weights, gradients and optimizer states sharded (like ZeRO-3);
one shard unit per transformer block, then the root. Checkpoints through
torch.distributed.checkpoint, each rank writing its own shards."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from harness.train.engines.base import Engine, StepResult, adamw, lr_at


class FsdpEngine(Engine):
    name = "fsdp"

    def __init__(self, model: torch.nn.Module, train, engine, device) -> None:
        super().__init__(model, train, engine, device)
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        policy = MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32)
        model = model.to(device)
        for block in model.layers:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        self.model = fully_shard(model, mesh=mesh, mp_policy=policy)
        self.optimizer = adamw(self.model.parameters(), train)

    def train_step(self, step: int, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> StepResult:
        total = 0.0
        for i, (x, y) in enumerate(micro_batches):
            # Reduce-scatter gradients only after the last micro-batch of the step.
            self.model.set_requires_gradient_sync(i == len(micro_batches) - 1)
            loss = self.model(x.to(self.device), y.to(self.device)) / len(micro_batches)
            loss.backward()
            total += float(loss.detach())
        clip = self.train_cfg.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr = lr_at(step, self.train_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(total, grad_norm, lr)

    def save(self, path: Path) -> None:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(path / "fsdp"))

    def load(self, path: Path) -> None:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=str(path / "fsdp"))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
