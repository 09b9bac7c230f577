"""Lay a model (or a pipeline stage of it) out on the mesh, in torchtitan's order: tensor
parallelism first, then context parallelism, then (train.compile) torch.compile per block, then
FSDP2 over the data-parallel (and CP) ranks. Activation checkpointing is the model's own (per
block, inside its forward), so it sits between TP and FSDP as torchtitan places it. The part is
built on the meta device and gets its weights after TP, so a rank never allocates more than its
TP slice of a stage.

Compile (torchtitan's apply_compile): each block's forward is compiled with fullgraph=True, so a
graph break is an error, not a silent slowdown. The blocks share their code, so dynamo compiles
one and the others reuse it. The forward is compiled rather than the module's call: the TP hooks
of the block's submodules (DTensor redistribution) are traced into the graph, while the hooks
FSDP2 puts on the block itself (all-gather before, reshard after) stay eager, outside it, as with
torchtitan's compiled block inside fully_shard. Parameter names do not change (no `_orig_mod`),
so weights, checkpoints and resharding are the same compiled or not. The activation checkpoint
wraps the block's call (`Transformer.forward`), so its recompute runs the compiled forward again.

Tensor parallelism follows Megatron-LM's split with DTensor plans (torchtitan's Llama plan):
- attention: wq, wk, wv column-wise (each rank its heads), wo row-wise;
- MLP: w1, w3 column-wise, w2 row-wise;
- token embedding row-wise (sharded over the vocabulary);
- output head: weight sharded over the vocabulary (see `tensor_parallel.head_loss`);
- with sequence parallelism (Korthikanti et al. 2022), the norms and the residual stream are
  sharded along the sequence between the blocks, and gathered before attention and the MLP.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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


def apply_compile(model: Transformer) -> None:
    """torch.compile the forward of every transformer block of the model (or stage), in place
    (see the module docstring); inductor, whose C++ backend runs on CPU."""
    for block in model.layers:
        block.forward = functools.partial(_run_compiled, torch.compile(block.forward, fullgraph=True))


def compile_stats() -> dict[str, int]:
    """This process's dynamo counters: graph breaks (0 under fullgraph=True, which raises on
    one) and the graphs compiled (one per distinct block, stage part and backward)."""
    from torch._dynamo.utils import counters

    return {"compile_graph_breaks": sum(counters["graph_break"].values()),
            "compile_graphs": int(counters["stats"]["unique_graphs"])}  # fmt: skip


def _run_compiled(compiled: Callable[..., torch.Tensor], x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
    # A view as the input (under TP the embedding's output is DTensor.to_local(), a view of the
    # DTensor's local tensor) makes AOT autograd send the input's gradient to the view's base,
    # past to_local's backward: wrong gradients, or an error in DTensor's redistribute backward
    # (torch 2.13). The first block gets its own copy of its input; the others get fresh tensors.
    return compiled(x.clone() if x._base is not None else x, *rest)


def parallelize(model: Transformer, dims: ParallelDims, *, device: torch.device, seed: int,
                param_dtype: torch.dtype, compile: bool = False) -> Transformer:  # fmt: skip
    """One model part (the whole model or one pipeline stage), built on the meta device: TP and
    CP, then its weights (each rank allocates and draws only its TP slice), then (`compile`)
    torch.compile per block, then FSDP2."""
    layout = dims.layout
    if layout.tp > 1:
        apply_tp(model, dims.tp_mesh, sequence_parallel=bool(layout.sequence_parallel))
    if layout.cp > 1:
        apply_cp(model, ContextParallel(dims.cp_group, dims.coords["cp"], layout.cp))
    materialize(model, device, seed)
    if compile:
        apply_compile(model)
    apply_fsdp(model, dims.fsdp_mesh, param_dtype=param_dtype, pipelined=layout.pp > 1)
    return model
