"""Pipeline parallelism with torch.distributed.pipelining: the model cut into pp × v stages of
whole layers, balanced by perf.layout.stage_layers (the first stage also holds the embedding,
the last the final norm, output head and loss, so they get fewer layers when the layers do not
divide evenly), and one schedule: 1F1B, GPipe, or interleaved 1F1B with v stages per rank.

Stage s runs on pipeline rank s mod pp (the looped placement the interleaved schedule expects;
with v = 1 simply stage = rank). A stage is the model with the other layers removed, so its
parameters keep their names (checkpoints reshard between layouts by name). The last stage
returns each micro-batch's mean loss (the model computes it, fused or loss-parallel), so the
schedule's loss function only passes it on; the schedule divides the gradients by the number of
micro-batches (scale_grads), which makes them the mean over the step's micro-batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

from harness.perf.layout import Layout, stage_layers
from harness.train.model import Transformer

SCHEDULES = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe, "interleaved_1f1b": ScheduleInterleaved1F1B}


def stage_ids(layout: Layout, pp_rank: int) -> list[int]:
    """The stages pipeline rank `pp_rank` runs: pp_rank, pp_rank + pp, ... (v of them)."""
    return [pp_rank + k * layout.pp for k in range(layout.pp_virtual_stages or 1)]


def stage_ranges(n_layers: int, n_stages: int) -> list[range]:
    """The layers of each stage, in order, balanced by perf.layout.stage_layers."""
    ranges, start = [], 0
    for count in stage_layers(n_layers, n_stages):
        ranges.append(range(start, start + count))
        start += count
    return ranges


def cut(model: Transformer, stage: int, n_stages: int) -> Transformer:
    """Keep only stage `stage`'s parts of `model` (in place; build it on the meta device)."""
    keep = stage_ranges(model.shape.n_layers, n_stages)[stage]
    for name in list(model.layers.keys()):
        if int(name) not in keep:
            del model.layers[name]
    if stage > 0:
        model.tok_embeddings = None
    if stage < n_stages - 1:
        model.norm, model.output = None, None
    return model


def _passes_loss(output: torch.Tensor, _target: Any = None) -> torch.Tensor:
    """The schedule's loss function: the last stage already returns the micro-batch's loss."""
    return output


def build_schedule(parts: list[Transformer], ids: list[int], layout: Layout, *, device: torch.device,
                   group: Any) -> Any:  # fmt: skip
    """The schedule over this rank's stages (`parts[i]` is stage `ids[i]`)."""
    n_stages = layout.pp * (layout.pp_virtual_stages or 1)
    stages = [PipelineStage(part, stage, n_stages, device, group=group) for part, stage in zip(parts, ids, strict=True)]
    cls = SCHEDULES[layout.pp_schedule]
    m = layout.pp_microbatches or layout.pp
    if layout.pp_schedule == "interleaved_1f1b":
        return cls(stages, n_microbatches=m, loss_fn=_passes_loss)
    return cls(stages[0], n_microbatches=m, loss_fn=_passes_loss)


def has_last_stage(ids: list[int], layout: Layout) -> bool:
    """Whether this rank runs the stage that computes the loss."""
    return layout.pp * (layout.pp_virtual_stages or 1) - 1 in ids


def has_first_stage(ids: list[int]) -> bool:
    """Whether this rank runs the stage that takes the token ids."""
    return 0 in ids
