"""`harness train --help`."""

from __future__ import annotations

from omegaconf import OmegaConf

from harness.config.compose import compose_base, group_options
from harness.config.docs import describe
from harness.config.helptext import keys_table
from harness.config.schema import DataConfig, EngineConfig, LoggerConfig, ModelConfig, ParallelConfig, TrainConfig
from harness.train.engines import ENGINES


def text() -> str:
    """Presets, engines, every train/engine/parallel/data/model/logger key with its default, exit
    codes, examples."""
    sections = [("train", TrainConfig), ("engine", EngineConfig), ("parallel", ParallelConfig), ("data", DataConfig),
                ("model", ModelConfig), ("logger", LoggerConfig)]  # fmt: skip
    # The defaults as a run gets them: the default presets' values (model=tiny), not the schema's ???.
    base = OmegaConf.to_container(compose_base(), resolve=True)
    assert isinstance(base, dict)
    keys = [(f"{prefix}.{k}", d, doc) for prefix, cls in sections for k, d, doc in describe(cls, values=base[prefix])]
    return f"""usage: harness train [key=value ...] [-m]

model presets: model={"|".join(group_options("model"))} (default tiny)
engines:       engine={"|".join(ENGINES)} (default deepspeed); engine=fsdp for tp, pp, cp or dp_replicate > 1
layouts:       parallel.* degrees multiply to the world size; mesh pp × dp_replicate × dp_shard × cp × tp
               (TP innermost: node-local ranks); the manifest's train.mesh says which hosts each group spans
plan:          train.dry_run=true plans without ranks for launch.nproc=N GPUs of hardware=NAME (configs/hardware;
               auto: this GPU's) with cluster.gpus_per_node per node: memory per device by term (weights,
               gradients, optimizer, gathered weights, activations x micro-batches in flight, logits), fits
               (need <= 0.9 x memory_gib), what to change when it does not, checkpoint_bytes, estimated step/MFU
               train.plan=auto (engine=fsdp, train.global_batch given): the layouts that fit, fastest first by the
               cost model; prints the best five, then trains the first (on CPU name the GPUs: hardware=h100-sxm)
compile:       train.compile=true: torch.compile per transformer block (after TP, before FSDP; inductor, C++
               on CPU); not with DeepSpeed ZeRO-3; the manifest records compile and its graph breaks

keys:
{keys_table(keys)}

exit codes: 0 ok, 1 failed, 2 bad input, 75 preempted (checkpoint saved; rerun with train.resume=auto), 130 interrupted

examples:
  harness train                                             # tiny, DeepSpeed ZeRO-1, 2 CPU ranks
  harness train engine=ddp train.steps=30 model=small
  harness train engine.zero_stage=3 train.dtype=bf16 train.global_batch=8
  harness train engine=fsdp train.ckpt_every=10 train.resume=auto
  harness train engine=fsdp launch.nproc=8 parallel.tp=2 parallel.pp=2 model.n_layers=4 train.global_batch=8
  harness train engine=fsdp launch.nproc=2 parallel.cp=2 train.exit_after_step=3   # then resume in any layout
  harness train model=llama3-70b train.dry_run=true launch.nproc=1024 train.seq_len=8192 train.dtype=bfloat16
  harness train model=llama3-405b train.dry_run=true hardware=h100-sxm launch.nproc=16384 engine=fsdp \
      parallel.tp=8 parallel.pp=16 train.activation_checkpointing=true train.seq_len=8192 train.micro_batch=1 \
      train.global_batch=2048 train.dtype=bf16                     # fits? what it costs, what to change
  harness train model=llama3-405b train.dry_run=true train.plan=auto hardware=h100-sxm launch.nproc=16384 \
      engine=fsdp train.seq_len=8192 train.micro_batch=1 train.global_batch=2048 train.dtype=bf16
  harness train engine=fsdp train.plan=auto hardware=h100-sxm train.global_batch=8   # chosen layout, 2 CPU ranks
  harness train engine=fsdp parallel.tp=2 train.compile=true model.fused_kernels=true
  python -m harness.train.tokenize input.txt data.u16 && harness train data.kind=tokens data.path=data.u16"""
