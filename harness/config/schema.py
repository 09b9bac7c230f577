"""Typed schemas of the Hydra config (registered in Hydra's ConfigStore by harness.config.compose).

YAML files under configs/ extend these; a key that is not declared here is an error, and the
values below are the defaults. Each field's docstring is what `harness <task> --help` prints.

Hydra composes into these dataclasses while they are mutable; a job's copy is then sealed
(`seal`): assigning to any field of a job's config raises. A field typed Any takes either one
value or a list of them (`bench.dtype=bf16` or `bench.dtype=[bf16,fp32]`), which OmegaConf cannot
express; its task parses it into a typed plan before anything runs.

Sizes are binary everywhere: 1K = 1KB = 1KiB = 1024 bytes, 1G = 1GB = 1GiB = 2^30 bytes (as
nccl-tests' -b/-e); a 'b' (bits) is refused. Dtypes take the canonical names or the usual
spellings: bf16, fp16/half, fp32/float, fp64/double, fp8 (e4m3); runs record the canonical name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, TypeVar  # noqa: UP035 (OmegaConf needs typing.Dict)

from omegaconf import MISSING, SI

T = TypeVar("T")


class Sealable:
    """A config section: mutable while Hydra composes it, read-only once `seal`ed."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_sealed"):
            raise dataclasses.FrozenInstanceError(f"cannot assign to {type(self).__name__}.{name}: a job's config "
                                                  "is read-only")  # fmt: skip
        object.__setattr__(self, name, value)


def seal(obj: T) -> T:
    """Make a composed config (and every section in it) read-only; returns it."""
    if isinstance(obj, Sealable) and dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            seal(getattr(obj, f.name))
        object.__setattr__(obj, "_sealed", True)
    return obj


@dataclass
class LaunchConfig(Sealable):
    """How ranks are started when the harness is not already under torchrun, srun or mpiexec."""

    nproc: str = "auto"
    """Ranks to start on this machine: a number, or 'auto' (one per GPU; 2 on a CPU-only machine).
    On a CPU more ranks than cores is allowed with a warning, and at most max(8 x cores, 64)."""
    timeout_s: int = 600
    """Seconds a collective may wait for its peers before the run fails (process-group timeout);
    1 to 86400 (a day)."""
    grace_s: int = 5
    """Seconds a rank gets to end after SIGTERM once the job is failing (then SIGKILL): a hang ends
    within launch.timeout_s + launch.grace_s."""
    bootstrap: str = "auto"
    """How ranks find rank 0: auto (mpi4py under mpiexec, the launcher's variables otherwise) or
    mpi (rank 0 broadcasts its address over mpi4py, e.g. under srun --mpi=pmi2 or pmix)."""


@dataclass
class ResultsConfig(Sealable):
    """Where run directories go."""

    dir: str = "results"
    """Folder that receives one run directory per run (relative to the working directory);
    default $HARNESS_RESULTS when set, else ./results."""
    run_id: Optional[str] = None  # noqa: UP045 (OmegaConf needs Optional)
    """The run directory's name; null: a new '<UTC time>-<task>-<6 hex>' (harness slurm submit
    passes the one it made, so that the job writes into the folder of its submission)."""
    sweep_id: Optional[str] = None  # noqa: UP045
    """The sweep (-m or a Slurm array) a run belongs to, a UUID; set by the harness."""
    runs: list[str] = field(default_factory=list)
    """harness results: the run directories (or run ids, or baseline names) a command reads; the
    positional RUN arguments."""
    sql: Optional[str] = None  # noqa: UP045
    """harness results query: the SQL (the positional argument)."""
    task: Optional[str] = None  # noqa: UP045
    """harness results list/trend: only runs of this task."""
    status: Optional[str] = None  # noqa: UP045
    """Only runs with this status: ok, failed, interrupted, running, abandoned, damaged."""
    host: Optional[str] = None  # noqa: UP045
    """Only runs (trend: only rows) on this host."""
    device_name: Optional[str] = None  # noqa: UP045
    """Only runs on devices whose name contains this (case-insensitive)."""
    config: list[str] = field(default_factory=list)
    """Only runs whose config has these values, each 'key=value' (e.g. [bench.dtype=bfloat16])."""
    since: Optional[str] = None  # noqa: UP045
    """Only runs started at or after this ISO date or time (UTC)."""
    until: Optional[str] = None  # noqa: UP045
    """Only runs started before the end of this ISO date (or before this time)."""
    sweep: Optional[str] = None  # noqa: UP045
    """Only the runs of this sweep id."""
    baseline: Optional[str] = None  # noqa: UP045
    """harness results regress: the baseline, a name given with `results baseline` or a run."""
    name: Optional[str] = None  # noqa: UP045
    """harness results baseline: the name to give the run (a system or partition, e.g. gpu-a)."""
    tolerance: Optional[float] = None  # noqa: UP045
    """harness results regress: the worst fraction a metric may lose against the baseline; null:
    the noise the runs show, at least 5 %."""
    format: str = "csv"
    """harness results export: csv | prometheus | mllog."""
    metric: Optional[str] = None  # noqa: UP045
    """harness results trend: 'kind.metric', e.g. gemm.tflops or memory.gbps."""
    by: str = "host"
    """harness results trend: one line per host or per gpu."""
    where: list[str] = field(default_factory=list)
    """harness results trend: only rows whose fields match, each 'field=value' (e.g. [dtype=bfloat16])."""


@dataclass
class BenchConfig(Sealable):
    """Options of the benchmark driver, shared by every benchmark (like nccl-tests' flags)."""

    names: list[str] = field(default_factory=list)
    """Benchmarks to run, in order (the positional NAME[,NAME...] of `harness bench`)."""
    dtype: Any = None
    """Data type or list of them (float64, float32, tf32, bfloat16, float16, float8, int32, int64;
    also bf16, fp16/half, fp32/float, fp64/double, fp8); null: each benchmark's default for the
    device (dtypes it lacks are skipped with a note)."""
    warmup: int = 5
    """Untimed iterations before timing, per case."""
    iters: int = 20
    """Timed iterations per case; the median is reported."""
    min_bytes: str = "1K"
    """Smallest collective message, bytes, like nccl-tests -b (binary: 1K = 1KB = 1KiB = 1024)."""
    max_bytes: str = "64M"
    """Largest collective message, bytes, like nccl-tests -e (binary: 1G = 2^30 bytes)."""
    step_factor: int = 4
    """Multiplicative step between message sizes, like nccl-tests -f."""
    shapes: Any = None
    """Matmul shapes as 'MxNxK' strings; null: the device's default list (square and skinny)."""
    m: Any = None
    """Matmul grid: m sizes as a list or 'start:stop:step' (stop included); with n and k."""
    n: Any = None
    """Matmul grid: n sizes, as m."""
    k: Any = None
    """Matmul grid: k sizes, as m."""
    redop: Any = "sum"
    """Reduction op(s) of all_reduce, reduce, reduce_scatter: sum, max, min, prod, avg."""
    root: int = 0
    """Root rank of broadcast and reduce, within its communicator."""
    groups: int = 1
    """Split the world into this many equal groups of consecutive ranks, run at the same time
    (like NCCL_TESTS_SPLIT): one row per group, to test nodes or rails separately."""
    in_place: str = "both"
    """Collective modes: both, true (in place only) or false (out of place only)."""
    array_bytes: Optional[str] = None  # noqa: UP045
    """Bytes per array of the memory benchmark (binary: 1G = 2^30); null: 1 GiB on GPU, 4x the
    last-level cache on CPU."""
    hpl_n: Any = None
    """Orders N of the HPL solves (list); null: 8192,16384 on GPU, 1024,2048 on CPU."""
    kernel_ops: Any = None
    """Ops of the kernels benchmark (list): rms_norm, swiglu, rope, fused_linear_cross_entropy; null: all."""
    kernel_impls: Any = None
    """Implementations the kernels benchmark times (list): eager, compile, fused; null: all that
    apply (fused needs a CUDA device)."""
    kernel_models: Any = None
    """Model presets (configs/model) whose sizes the kernels run at; null: llama3-1b, llama3-8b,
    llama3-70b on GPU, small on CPU."""
    kernel_tokens: Optional[int] = None  # noqa: UP045
    """Tokens per kernel call (rows of the activations); null: 16384 on GPU (4 x 4096), 256 on CPU."""
    kernel_timing: str = "launch"
    """launch: time each call as issued from Python (what a training step sees); graph: replay a
    CUDA graph of the call, the device's time alone (like nccl-tests -G; GPU only; the fused
    cross-entropy, which reads its target count on the host, stays at launch)."""


@dataclass
class TelemetryConfig(Sealable):
    """The sampler beside every measured case."""

    enabled: bool = True
    """Sample NVML (GPU) or OS (CPU) counters while each case is timed."""
    interval_ms: int = 100
    """Milliseconds between samples."""


@dataclass
class ModelConfig(Sealable):
    """A decoder's shape (presets in configs/model/: tiny, small, llama3-1b/8b/70b/405b, gpt3-175b)."""

    name: str = MISSING
    """The preset's name, recorded with every training row (e.g. llama3-8b)."""
    vocab_size: int = MISSING
    """Tokens in the vocabulary (256 for the byte-level presets)."""
    dim: int = MISSING
    """Hidden size."""
    n_layers: int = MISSING
    """Transformer blocks."""
    n_heads: int = MISSING
    """Attention (query) heads; must divide dim."""
    n_kv_heads: int = MISSING
    """Key/value heads (grouped-query attention); must divide n_heads."""
    ffn_dim: int = MISSING
    """Hidden size of the SwiGLU MLP."""
    max_seq_len: int = 2048
    """Longest sequence the rotary tables cover, tokens."""
    rope_theta: float = 500000.0
    """Base of the rotary embedding frequencies."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    tied_embeddings: bool = False
    """Share the token embedding with the output projection."""
    lr: float = 3e-4
    """The preset's peak learning rate (what train.lr defaults to): 3e-3 for tiny, which learns its
    synthetic data in 40 steps; published values for the Llama and GPT-3 presets."""
    fused_kernels: bool = False
    """Run RMSNorm, SwiGLU, RoPE and the output projection + cross-entropy through the fused ops
    of `kernels/` (Triton on CUDA, or under TRITON_INTERPRET=1; their PyTorch fallback elsewhere).
    The manifest's train.fused_kernels says which path ran: triton, torch or off."""


@dataclass
class EngineConfig(Sealable):
    """How the model is distributed (presets: engine=deepspeed | engine=fsdp | engine=ddp)."""

    name: str = "deepspeed"
    """deepspeed | fsdp (PyTorch FSDP2 fully_shard) | ddp; set by the engine preset."""
    zero_stage: int = 1
    """DeepSpeed ZeRO stage 0-3 (fsdp shards like stage 3, ddp replicates like stage 0)."""
    offload_optimizer: bool = False
    """DeepSpeed: keep optimizer states in host memory."""
    offload_params: bool = False
    """DeepSpeed ZeRO-3: keep parameters in host memory."""


@dataclass
class DataConfig(Sealable):
    """Where tokens come from."""

    kind: str = "synthetic"
    """synthetic (seeded random tokens) | tokens (a flat file of token ids)."""
    path: str = ""
    """The token file for kind=tokens (python -m harness.train.tokenize makes one from text)."""
    dtype: str = "uint16"
    """uint16 | uint32: the width of each id in the token file."""


@dataclass
class TrainConfig(Sealable):
    """The training loop."""

    steps: int = 20
    """Optimizer steps."""
    dtype: str = "float32"
    """float32 | bfloat16 | float16: the compute dtype (master weights stay fp32)."""
    micro_batch: int = 2
    """Sequences per rank per forward/backward."""
    global_batch: int = 0
    """Sequences per optimizer step over all ranks; 0: micro_batch x data-parallel ranks
    (no accumulation). Must be a multiple of micro_batch x data-parallel ranks."""
    seq_len: int = 64
    """Tokens per sequence."""
    lr: float = SI("${model.lr}")
    """Peak learning rate, reached after warmup_steps; cosine decay to lr x min_lr_ratio.
    Default: the model preset's model.lr."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (the floor of the cosine)."""
    warmup_steps: int = 2
    """Steps of linear learning-rate warmup (also left out of the throughput summary)."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clipping threshold (0: off)."""
    seed: int = 0
    """Seed of the weights and the data."""
    log_every: int = 1
    """Steps between rows (and console lines)."""
    ckpt_every: int = 0
    """Steps between checkpoints (0: only on preemption)."""
    ckpt_dir: str = "checkpoints/${model.name}-${engine.name}"
    """Where checkpoints go; kept across runs so that a requeued job resumes."""
    resume: str = "auto"
    """auto (continue from ckpt_dir/latest when there is one) | never | a checkpoint folder."""
    dry_run: bool = False
    """Print parameters, FLOPs and the memory plan; build nothing heavy, train nothing."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass (HFU counts the recompute)."""
    exit_after_step: int = 0
    """Stop cleanly after this step with a checkpoint and exit 0, while the schedule still follows
    train.steps (like Megatron's --exit-interval); 0: run to train.steps."""
    plan: str = "off"
    """off: train the layout given by parallel.* | auto: enumerate the layouts that fit
    (hardware.memory_gib, cluster.gpus_per_node), rank them by estimated step time, print the best
    five, and (unless train.dry_run) train with the best one."""
    compile: bool = False
    """torch.compile each transformer block (after tensor parallelism and activation
    checkpointing, before FSDP, as torchtitan); inductor's C++ backend on CPU."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms (off by default, as torchtitan's debug.deterministic and
    Megatron's --deterministic-mode: it costs speed). On CPU the same seed gives the same losses
    bit for bit without it; on GPUs some kernels (atomics, some cuBLAS/cuDNN paths) need it."""


@dataclass
class ParallelConfig(Sealable):
    """How `harness train` lays the model out over its ranks: a device mesh of pipeline (pp,
    outermost), data (dp_replicate x dp_shard), context (cp) and tensor (tp, innermost, within a
    node) parallelism, as torchtitan and Megatron. Their product is the world size."""

    dp_replicate: int = 1
    """Replicas of the sharded model (HSDP: FSDP within a replica, all-reduce across replicas)."""
    dp_shard: int = -1
    """FSDP degree: ranks a replica's weights, gradients and optimizer states are sharded over;
    -1: what the other degrees leave of the world."""
    tp: int = 1
    """Tensor parallelism (Megatron-style column/row sharding of attention and MLP, DTensor)."""
    pp: int = 1
    """Pipeline stages (torch.distributed.pipelining)."""
    cp: int = 1
    """Context parallelism: the sequence split over cp ranks (Llama 3's all-gather of K and V)."""
    pp_schedule: str = "1f1b"
    """1f1b | gpipe | interleaved_1f1b."""
    pp_microbatches: Optional[int] = None  # noqa: UP045
    """Micro-batches per pipeline per step; null: the accumulation count (global batch /
    (data-parallel ranks x micro-batch))."""
    pp_virtual_stages: Optional[int] = None  # noqa: UP045
    """Model chunks per pipeline rank; null: 1, or 2 for interleaved_1f1b."""
    sequence_parallel: Optional[bool] = None  # noqa: UP045
    """Shard norms and dropout along the sequence within a TP group; null: on when tp > 1."""


@dataclass
class ClusterConfig(Sealable):
    """The machine a plan or projection is for (the running job's own shape comes from its launcher)."""

    gpus_per_node: int = 8
    """GPUs (ranks) per node: TP stays within a node; accept and slurm default to it."""
    gpus: Any = None
    """GPU count(s) to project for (`harness project`, required there): a number, a list, or a
    geometric range '8..16384x2' (start, stop, factor)."""


@dataclass
class ProjectConfig(Sealable):
    """`harness project`: what the projection is calibrated on and checked against (the model,
    workload, layout, cluster and hardware come from model.*, train.*, parallel.*, cluster.* and
    hardware=)."""

    calibrate: list[str] = field(default_factory=list)
    """Run directories measured on the hardware projected: `harness bench` runs of gemm, all_reduce,
    all_gather, reduce_scatter or sendrecv (alpha in s and beta in GB/s per collective, GEMM TFLOP/s
    per shape) and `harness train` runs (measured / modelled compute time, a factor); the fit's
    relative residuals are reported. A profile without network figures (cpu) needs these."""
    check: list[str] = field(default_factory=list)
    """Measured runs held out of the fit (same kinds as project.calibrate): the calibrated model
    predicts each collective row's busbw (GB/s), each gemm row's TFLOP/s and each train run's
    median step time (s), and the relative error of every prediction is reported."""


@dataclass
class WandbConfig(Sealable):
    """Weights & Biases. Offline unless mode=online is set explicitly: a run never talks to the
    internet by default. `wandb sync <run dir>/wandb/offline-run-*` uploads later, from a login node."""

    mode: str = "offline"
    """offline | online | disabled."""
    project: str = "exaharness"
    entity: str = ""
    """Team or user; empty: wandb's default."""


@dataclass
class LoggerConfig(Sealable):
    """Where training metrics go besides rows.jsonl (presets: logger=none | logger=wandb)."""

    name: str = "none"
    """none | wandb."""
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class SlurmConfig(Sealable):
    """`harness slurm submit`: the job's resources (checked, then written as #SBATCH lines)."""

    job_name: str = "harness"
    """--job-name, what squeue shows."""
    nodes: int = 1
    """--nodes."""
    ntasks_per_node: Optional[int] = None  # noqa: UP045
    """Tasks (ranks) per node: one per GPU, or per CPU share; null: Slurm's default (1)."""
    gpus_per_node: Optional[int] = None  # noqa: UP045
    """GPUs per node (--gpus-per-node); null: cluster.gpus_per_node when the job runs on GPUs (the
    submitting host has one), none for a CPU job."""
    partition: Optional[str] = None  # noqa: UP045
    """--partition; null: the cluster's default."""
    account: Optional[str] = None  # noqa: UP045
    """--account to charge; null: the user's default."""
    qos: Optional[str] = None  # noqa: UP045
    """--qos; null: the default."""
    time: Optional[str] = None  # noqa: UP045
    """Time limit: minutes, HH:MM:SS or D-HH:MM:SS."""
    exclude: Optional[str] = None  # noqa: UP045
    """Nodes to keep out, e.g. n[3,7] (exclude.txt of harness accept)."""
    extra: list[str] = field(default_factory=list)
    """Further sbatch options, one '--option=value' each."""
    wait: bool = False
    """Follow the job until it ends, then print its summary."""
    array: bool = False
    """Submit a sweep (comma lists in the overrides) as one job array, one run directory per element."""
    poll_s: float = 2.0
    """Seconds between status polls while waiting."""


@dataclass
class DebugConfig(Sealable):
    """Fault injection, to test that failures are recorded (as DCGM and nccl-tests do)."""

    fault: str = "none"
    """none | wrong_result (corrupt one result) | raise (exception) | hang (stop answering)."""
    fault_rank: int = 0
    """Rank on which the fault happens."""
    preempt_at_step: int = 0
    """train: send SIGUSR1 to rank fault_rank after this step (0: never), as Slurm does before a
    preemption; the run checkpoints, stops with exit code 75, and resumes with train.resume=auto."""


@dataclass
class HardwareConfig(Sealable):
    """A device profile (configs/hardware/<name>.yaml): datasheet peaks and acceptance thresholds.
    hardware=auto (the default) picks the profile whose name pattern matches the device."""

    name: str = "auto"
    """Profile name, or auto (detect from the device name)."""
    description: str = ""
    """The profile in words, with its datasheet (shown in reports and --help)."""
    match: list[str] = field(default_factory=list)
    """Substrings of the device name that identify this hardware."""
    peak_tflops: dict[str, float] = field(default_factory=dict)
    """Dense datasheet peak per dtype, TFLOP/s."""
    memory_tbps: Optional[float] = None  # noqa: UP045 (OmegaConf needs Optional)
    """Memory bandwidth, TB/s."""
    link_gbps: Optional[float] = None  # noqa: UP045
    """GPU-to-GPU link bandwidth per GPU, both directions, GB/s (busbw approaches half of it)."""
    memory_gib: Optional[float] = None  # noqa: UP045
    """Device memory, GiB (the planner's capacity: a layout fits in 0.9 of it)."""
    nvlink_domain: Optional[int] = None  # noqa: UP045
    """GPUs that share one NVLink domain (8 on HGX/DGX, 72 on GB200 NVL72)."""
    nic_gbit_per_s: Optional[float] = None  # noqa: UP045
    """Scale-out network bandwidth per GPU, Gbit/s, one direction (e.g. 400 for NDR InfiniBand)."""
    latency_us: Dict[str, float] = field(default_factory=dict)  # noqa: UP006
    """Per-message latency α of a collective step, microseconds: intra_node (NVLink) and inter_node (network)."""
    relative: bool = False
    """True: thresholds are fractions of the peers' median, not of the peaks (CPU nodes)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Acceptance gates as fractions: gemm_<dtype> (best TFLOP/s of the peak), memory_triad (of
    memory_tbps), all_reduce_busbw (per node, largest size, of link_gbps / 2), node_pair_busbw."""


@dataclass
class AcceptConfig(Sealable):
    """`harness accept`: what runs and how figures are judged."""

    gemm_dtypes: Any = None
    """GEMM dtypes gated (list); null: those the profile has a gemm_<dtype> threshold for (CPU: float32)."""
    gemm_shapes: Any = None
    """GEMM shapes 'MxNxK'; null: 8192x8192x8192 on GPU, 384x384x384 on CPU."""
    comm_bytes: Optional[str] = None  # noqa: UP045
    """Largest collective message, bytes (binary K/M/G); the bandwidth gates read this size; null: 1G
    on GPU, 4M on CPU."""
    gpus_per_node: Optional[int] = None  # noqa: UP045
    """Expected GPUs per node (health check); null: cluster.gpus_per_node on GPU nodes, not checked on
    CPU nodes (listed as not applicable)."""
    cores_per_node: Optional[int] = None  # noqa: UP045
    """Expected CPU cores per node; null: the nodes are compared with each other."""
    outlier_mad: float = 4.0
    """A figure this many (scaled) median absolute deviations below its peers' median is an outlier."""
    outlier_min_rel: float = 0.10
    """The outlier limit lies at least this fraction below the median (a tight fleet's noise is not flagged)."""
    partition: Optional[str] = None  # noqa: UP045
    """Partition whose site references apply; null: $SLURM_JOB_PARTITION, else '*'."""
    retries: int = 1
    """Re-tests before a figure fails: a stage whose figures failed a threshold, reference or
    outlier gate runs again, and a subject is flagged only if it fails again (as ReFrame and DCGM
    re-test); both attempts are recorded. 0: no re-test."""
    min_peers: int = 3
    """Subjects a peer comparison needs (outliers, and thresholds of relative profiles such as
    cpu); with fewer, those gates are not applicable and the report says so on top."""
    health: str = "on"
    """on: NVML health checks on every GPU (a GPU without working NVML fails them) | skip: none
    (the report says so on top)."""


@dataclass
class SiteConfig(Sealable):
    """Expected figures of one system (configs/site/<system>.yaml), in the spirit of ReFrame:
    references[partition][metric] = {value, lower, upper} with lower/upper as signed fractions
    (e.g. lower -0.05: up to 5 % below value passes; null: unbounded). Partition '*' applies to all."""

    name: str = "none"
    references: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultConfig(Sealable):
    """Fault injection for testing detection (off by default; marked in the manifest when on)."""

    slow_rank: Optional[int] = None  # noqa: UP045
    """Rank that sleeps inside its timed region, (slow_factor - 1) x its own time per call."""
    slow_factor: float = 3.0
    """How much slower the slow rank's figures come out."""
    corrupt_rank: Optional[int] = None  # noqa: UP045
    """Rank that perturbs its first result (of each acceptance stage), so the correctness gate must name it."""


@dataclass
class RunConfig(Sealable):
    """The whole configuration of one run."""

    task: str = MISSING
    """The task: bench, train or accept (set by the command line)."""
    device: str = "auto"
    """auto | cpu | cuda. auto: cuda when a GPU is visible, else cpu (gloo)."""
    seed: int = 0
    """Seed of the random inputs."""
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    project: ProjectConfig = field(default_factory=ProjectConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    accept: AcceptConfig = field(default_factory=AcceptConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)


def number_keys(cls: type | None = None, prefix: str = "") -> frozenset[str]:
    """Dotted keys the schema declares as numbers (int, float) or sizes (*_bytes): never secrets,
    whatever they are called (bench.kernel_tokens is a count)."""
    cls = cls or RunConfig
    found: set[str] = set()
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            found |= number_keys(type(default), f"{path}.")
        elif str(f.type).replace("Optional[", "").rstrip("]") in ("int", "float") or f.name.endswith("_bytes"):
            found.add(path)
    return frozenset(found)


GROUPS: dict[str, type] = {
    "bench": BenchConfig,
    "model": ModelConfig,
    "logger": LoggerConfig,
    "engine": EngineConfig,
    "hardware": HardwareConfig,
    "site": SiteConfig,
}
"""Config groups with presets under configs/<group>/ and the schema each preset extends."""
