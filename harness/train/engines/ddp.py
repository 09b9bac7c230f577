"""PyTorch DistributedDataParallel: every rank holds the whole model (like ZeRO-0). Checkpoints
through torch.distributed.checkpoint, keyed by parameter name, so they load at another world size
(data parallelism only: the trainer refuses tp, pp, cp and dp_replicate > 1 for this engine)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from harness.train.engines.base import DCP_DIR, Engine, StepResult, adamw, lr_at


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

    def _state(self) -> dict:
        flat = StateDictOptions(flatten_optimizer_state_dict=True)
        return {"model": get_model_state_dict(self.model),
                "optimizer": get_optimizer_state_dict(self.model, self.optimizer, options=flat),
                "scaler": self.scaler.state_dict()}  # fmt: skip

    def save(self, path: Path) -> None:
        dcp.save(self._state(), checkpoint_id=str(path / DCP_DIR))

    def load(self, path: Path) -> None:
        state = self._state()
        dcp.load(state, checkpoint_id=str(path / DCP_DIR))
        set_model_state_dict(self.model, state["model"])
        flat = StateDictOptions(flatten_optimizer_state_dict=True)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=flat)
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
