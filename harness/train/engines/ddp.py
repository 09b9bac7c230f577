"""PyTorch DistributedDataParallel: every rank holds the whole model (like ZeRO-0)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from harness.train.engines.base import Engine, StepResult, adamw, lr_at


class DdpEngine(Engine):
    name = "ddp"

    def __init__(self, model: torch.nn.Module, train, engine, device) -> None:
        super().__init__(model, train, engine, device)
        self.module = model.to(device)
        self.model = DistributedDataParallel(self.module, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = adamw(self.module.parameters(), train)
        self.scaler = torch.amp.GradScaler(device.type, enabled=train.dtype == "float16")

    def train_step(self, step: int, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> StepResult:
        total = 0.0
        for i, (x, y) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last else self.model.no_sync(), self.autocast():
                loss = self.model(x.to(self.device), y.to(self.device)) / len(micro_batches)
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        self.scaler.unscale_(self.optimizer)
        clip = self.train_cfg.grad_clip or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip))
        lr = lr_at(step, self.train_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(total, grad_norm, lr)

    def save(self, path: Path) -> None:
        if dist.get_rank() == 0:
            state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict()}  # fmt: skip
            torch.save(state, path / "ddp.pt")
        dist.barrier()

    def load(self, path: Path) -> None:
        state = torch.load(path / "ddp.pt", map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
