"""`harness project --help` (imports no torch)."""

from __future__ import annotations

from harness.config.compose import group_options
from harness.config.docs import describe
from harness.config.helptext import keys_table
from harness.config.schema import ClusterConfig, ParallelConfig, ProjectConfig, TrainConfig

TRAIN_KEYS = {
    "seq_len": "Tokens per sequence.",
    "micro_batch": "Sequences per micro-batch on one data-parallel rank.",
    "global_batch": "Sequences per optimizer step over all GPUs (a projection needs it: 0 is refused).",
    "dtype": "float32 | tf32 | bfloat16 | float16 | float8 (fp8 linear layers, the rest bf16): the precision "
             "projected; FLOP/s and MFU are over its peak.",
    "activation_checkpointing": "true: full recompute on every layout; false: the planner turns it on only where a "
                                "layout does not fit without it (a given layout keeps it off).",
}  # fmt: skip
"""The train.* keys a projection reads, with what they mean to it."""


def text() -> str:
    """Usage, presets, the keys a projection reads, what it writes, exit codes, examples."""
    keys = [(f"cluster.{k}", d, doc) for k, d, doc in describe(ClusterConfig)]
    keys += [(f"train.{k}", d, TRAIN_KEYS[k]) for k, d, _ in describe(TrainConfig) if k in TRAIN_KEYS]
    keys += [(f"parallel.{k}", d, doc) for k, d, doc in describe(ParallelConfig)]
    keys += [(f"project.{k}", d, doc) for k, d, doc in describe(ProjectConfig)]
    hardware = [h for h in group_options("hardware") if h != "auto"]
    return f"""usage: harness project model=PRESET hardware=PROFILE cluster.gpus=N|[N,...]|START..STOPxFACTOR \\
           train.global_batch=SEQUENCES [train.seq_len=T train.micro_batch=B train.dtype=bf16] [parallel.*] \\
           [project.calibrate=[RUN,...]] [project.check=[RUN,...]]

Projects a training step of the model on a cluster of GPUs with the cost model of harness/perf
(docs/projection.md): per GPU count the step time and where it goes (compute, TP, CP, pipeline
bubble and sends, exposed data-parallel traffic, optimizer), tokens/s, model TFLOP/s per GPU
(6N'+12LHQT) and with recompute, MFU and HFU over the peak of train.dtype, sustained PFLOP/s, and
the memory per GPU. A projection, not a measurement; nothing runs on a GPU.

model presets: model={"|".join(group_options("model"))} (override any key: model.n_layers=96)
hardware:      hardware={"|".join(hardware)}
               (auto: this machine's device). The profile needs its network figures (link_gbps,
               nvlink_domain, nic_gbit_per_s, latency_us); cpu and others without them project
               only from calibration runs
layout:        no parallel.* key: the planner's fastest layout that fits, per count (activation
               checkpointing turned on only where needed, unless train.activation_checkpointing=true);
               parallel.* set: that layout, dp_shard=-1 filling the count. A count no layout uses
               whole is projected at the largest count below it, with the idle GPUs in the row.
calibration:   project.calibrate=[RUN,...] fits α and β per collective (bench all_reduce, all_gather,
               reduce_scatter, sendrecv), the GEMM rates (bench gemm) and a compute factor (train
               runs) to runs measured on that hardware, and reports the fit's residuals;
               project.check=[RUN,...] predicts held-out runs and reports each error.

writes: rows (kind projection, one per count; calibration; prediction), sustained.png (PFLOP/s
against GPUs, with the peak and a 0.5 EF line), breakdown.png (share of the step per part), and
the summary line in the manifest: '10,000 × b200, bf16: X EF sustained of 22.5 EF peak (Y %)'.

keys (model.* and hardware.* keys too):
{keys_table(keys)}

exit codes: 0 ok, 2 bad input (a count the layout cannot use, a profile without network figures,
a calibration run of another device or benchmark, a corrupt run, an unknown preset)

examples:
  harness project model=llama3-70b hardware=b200 cluster.gpus=8..16384x2 train.seq_len=8192 \\
      train.global_batch=2048 train.micro_batch=1 train.dtype=bf16
  harness project model=llama3-405b hardware=b200 cluster.gpus=10000 train.seq_len=8192 \\
      train.global_batch=2048 train.micro_batch=1 train.dtype=fp8
  harness project model=llama3-405b hardware=h100-sxm cluster.gpus=16384 train.seq_len=8192 \\
      train.global_batch=2048 train.micro_batch=1 train.dtype=bf16 train.activation_checkpointing=true \\
      parallel.tp=8 parallel.pp=16 parallel.pp_schedule=interleaved_1f1b parallel.pp_virtual_stages=4
  harness project model=small hardware=cpu cluster.gpus=2 cluster.gpus_per_node=2 train.seq_len=256 \\
      train.global_batch=8 train.micro_batch=4 project.calibrate=[RUN_GEMM,RUN_COLL,RUN_TRAIN1] \\
      project.check=[RUN_COLL2,RUN_DDP2]"""
