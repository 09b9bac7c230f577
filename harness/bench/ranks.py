"""What a rank knows about the job it runs in, shared by `harness bench` and `harness accept`:
ranks sharing a memory, the smallest free memory of any rank, the node count, the telemetry
source, and the faults a test injects."""

from __future__ import annotations

import torch
import torch.distributed

from harness import devices, telemetry
from harness.bench.base import PlanEnv
from harness.bench.driver import Fault, Telemetry
from harness.config.job import Job
from harness.config.schema import RunConfig
from harness.config.validate import validate_faults
from harness.dist import DistContext
from harness.errors import ConfigError


def ranks_per_host(job: Job) -> int:
    """Before the ranks start: ranks sharing one host's memory (CPU ranks share its RAM)."""
    if job.device_type != "cpu":
        return 1
    return job.nproc or 1


def ranks_sharing_memory(ctx: DistContext) -> int:
    """CPU ranks share the host's RAM, GPU ranks each have their own."""
    return ctx.launch.local_world_size if ctx.device.type == "cpu" else 1


def min_free_memory(ctx: DistContext) -> int:
    """The smallest free memory of any rank: every rank plans with it, so all refuse or none does."""
    free = torch.tensor(
        [devices.free_memory_bytes(ctx.device.type, in_rank=True)], dtype=torch.int64, device=ctx.device
    )
    torch.distributed.all_reduce(free, op=torch.distributed.ReduceOp.MIN)
    return int(free)


def node_count(ctx: DistContext) -> int:
    """Nodes of the job (collective: every rank calls it). Ranks are placed node by node with
    the same count on each; a job with different counts per node (srun -N2 -n7) is refused on
    every rank alike, since the per-node stages would pair ranks that do not exist."""
    per_node = torch.tensor([ctx.launch.local_world_size, -ctx.launch.local_world_size], device=ctx.device)
    torch.distributed.all_reduce(per_node, op=torch.distributed.ReduceOp.MAX)
    most, fewest = int(per_node[0]), -int(per_node[1])
    if most != fewest:
        raise ConfigError(f"nodes run between {fewest} and {most} ranks; per-node stages need the same count on "
                          "every node (e.g. srun --ntasks-per-node)")  # fmt: skip
    return max(1, ctx.world_size // max(1, most))


def plan_env(ctx: DistContext, *, nodes: int | None = None) -> PlanEnv:
    """Where the cases run, now that the world is known (collective: every rank calls it)."""
    return PlanEnv(device_type=ctx.device.type, free_memory_bytes=min_free_memory(ctx), world_size=ctx.world_size,
                   ranks_per_host=ranks_sharing_memory(ctx), device_name=devices.device_name(ctx.device.type),
                   nodes=nodes if nodes is not None else node_count(ctx))  # fmt: skip


def telemetry_for(interval_s: float | None, ctx: DistContext) -> tuple[Telemetry, str | None]:
    """The sampler settings and this rank's source (NVML by UUID, or the OS), with a note when
    NVML was wanted and is missing."""
    if interval_s is None:
        return Telemetry(), None
    uuid = devices.gpu_uuid(ctx.device) if ctx.device.type == "cuda" else None
    source, note = telemetry.make_source(ctx.device.type, ctx.device.index or 0, uuid=uuid)
    return Telemetry(source, interval_s), note


def fault_of(cfg: RunConfig, world: int | None) -> Fault:
    """debug.fault, or fault.corrupt_rank / fault.slow_rank (the acceptance-test injections), checked."""
    validate_faults(cfg, world)
    kind, rank = cfg.debug.fault, cfg.debug.fault_rank
    if cfg.fault.corrupt_rank is not None:
        kind, rank = "wrong_result", int(cfg.fault.corrupt_rank)
    slow = None if cfg.fault.slow_rank is None else int(cfg.fault.slow_rank)
    return Fault(kind, rank, slow, float(cfg.fault.slow_factor))
