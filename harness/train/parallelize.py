"""Lay a model (or a pipeline stage of it) out on the mesh, in torchtitan's order: tensor
parallelism first, then context parallelism, then FSDP2 over the data-parallel (and CP) ranks.
Activation checkpointing is the model's own (per block, inside its forward), so it sits between
TP and FSDP as torchtitan places it. The part is built on the meta device and gets its weights
after TP, so a rank never allocates more than its TP slice of a stage.

Tensor parallelism follows Megatron-LM's split with DTensor plans (torchtitan's Llama plan):
- attention: wq, wk, wv column-wise (each rank its heads), wo row-wise;
- MLP: w1, w3 column-wise, w2 row-wise;
- token embedding row-wise (sharded over the vocabulary);
- output head: weight sharded over the vocabulary (see `tensor_parallel.head_loss`);
- with sequence parallelism (Korthikanti et al. 2022), the norms and the residual stream are
  sharded along the sequence between the blocks, and gathered before attention and the MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from harness.train.context_parallel import ContextParallel
from harness.train.mesh import ParallelDims
from harness.train.model import Transformer, materialize


def apply_tp(model: Transformer, tp_mesh: DeviceMesh, *, sequence_parallel: bool) -> None:
    """Shard the model's weights over the TP ranks (every rank built the same full weights, so
    each keeps its own slice without communication: src_data_rank=None)."""
    between = Shard(1) if sequence_parallel else Replicate()  # the residual stream's layout
    plan: dict[str, Any] = {}
    if model.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=between)
    if model.norm is not None and sequence_parallel:
        plan["norm"] = SequenceParallel()
    if plan:
        parallelize_module(model, tp_mesh, plan, src_data_rank=None)
    if model.output is not None:
        weight = distribute_tensor(model.output.weight.detach(), tp_mesh, [Shard(0)], src_data_rank=None)
        model.output.weight = nn.Parameter(weight)
    for block in model.layers:
        parallelize_module(block, tp_mesh, _block_plan(between, sequence_parallel), src_data_rank=None)


def _block_plan(between: Any, sequence_parallel: bool) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(), "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=between),
        "feed_forward.w1": ColwiseParallel(), "feed_forward.w3": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(output_layouts=between),
    }  # fmt: skip
    if sequence_parallel:
        plan.update({
            "attention_norm": SequenceParallel(), "ffn_norm": SequenceParallel(),
            # (x, cos, sin): gather x along the sequence; the rotary tables stay as they are
            "attention": PrepareModuleInput(input_layouts=(Shard(1), None, None),
                                            desired_input_layouts=(Replicate(), None, None)),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        })  # fmt: skip
    return plan


def apply_cp(model: Transformer, cp: ContextParallel) -> None:
    """Every attention of the model spans the CP group."""
    for block in model.layers:
        block.attention.context_parallel = cp


def apply_fsdp(model: Transformer, mesh: DeviceMesh, *, param_dtype: torch.dtype, pipelined: bool) -> None:
    """FSDP2 per block, then the rest (embedding, norm, head) at the root; gradients reduced in
    fp32. Under a pipeline, blocks keep their weights gathered between micro-batches
    (reshard_after_forward=False), as torchtitan does, instead of gathering them again for each;
    otherwise FSDP2's default (blocks reshard, the root does not)."""
    reshard_after_forward = False if pipelined else None
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)


def parallelize(model: Transformer, dims: ParallelDims, *, device: torch.device, seed: int,
                param_dtype: torch.dtype) -> Transformer:  # fmt: skip
    """One model part (the whole model or one pipeline stage), built on the meta device: TP and
    CP, then its weights (each rank allocates and draws only its TP slice), then FSDP2."""
    layout = dims.layout
    if layout.tp > 1:
        apply_tp(model, dims.tp_mesh, sequence_parallel=bool(layout.sequence_parallel))
    if layout.cp > 1:
        apply_cp(model, ContextParallel(dims.cp_group, dims.coords["cp"], layout.cp))
    materialize(model, device, seed)
    apply_fsdp(model, dims.fsdp_mesh, param_dtype=param_dtype, pipelined=layout.pp > 1)
    return model
