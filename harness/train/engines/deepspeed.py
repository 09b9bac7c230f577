"""DeepSpeed: ZeRO stages 0-3, bf16/fp16/fp32, gradient accumulation and clipping, optional CPU
offload. The DeepSpeed config is generated from the Hydra config (one source of truth) and saved
in the run directory. CPU facts (shared/REFERENCE.md §8): gloo, torch's AdamW, and the shm comm
op switched off (it needs a compiler and leaks /dev/shm files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.config.schema import EngineConfig, TrainConfig
from harness.train.engines.base import Engine, StepResult, adamw, lr_at


def deepspeed_config(train: TrainConfig, engine: EngineConfig, micro_batch: int, accumulation: int,
                     world_size: int) -> dict[str, Any]:  # fmt: skip
    """The DeepSpeed JSON config for this run."""
    zero: dict[str, Any] = {"stage": engine.zero_stage}
    if engine.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if engine.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_batch_size": micro_batch * accumulation * world_size,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": train.dtype == "bfloat16"},
        "fp16": {"enabled": train.dtype == "float16", "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedEngine(Engine):
    name = "deepspeed"

    def __init__(self, model: torch.nn.Module, train, engine, device, *, micro_batch: int, accumulation: int) -> None:
        super().__init__(model, train, engine, device)
        if device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.config = deepspeed_config(train, engine, micro_batch, accumulation, dist.get_world_size())
        self.accumulation = accumulation
        model = model.to(device)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=adamw(model.parameters(), train), config=self.config,
            dist_init_required=False,
        )  # fmt: skip

    def train_step(self, step: int, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> StepResult:
        lr = lr_at(step, self.train_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, own_norm = 0.0, None
        for i, (x, y) in enumerate(micro_batches):
            loss = self.engine(x.to(self.device), y.to(self.device))
            self.engine.backward(loss)  # DeepSpeed scales by 1/accumulation itself
            if i == len(micro_batches) - 1 and self.engine_cfg.zero_stage == 0:
                # ZeRO-0 keeps whole, reduced gradients but does not report their norm.
                grads = [p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None]
                own_norm = float(torch.stack(grads).norm()) if grads else None
            self.engine.step()  # applies the update at the accumulation boundary only
            total += float(loss.detach()) / len(micro_batches)
        norm = self.engine.get_global_grad_norm()
        return StepResult(total, float(norm) if norm is not None else own_norm, lr)

    def save(self, path: Path) -> None:
        self.engine.save_checkpoint(str(path), tag="deepspeed", save_latest=False)

    def load(self, path: Path) -> None:
        loaded, _ = self.engine.load_checkpoint(str(path), tag="deepspeed")
        if loaded is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {path}")
