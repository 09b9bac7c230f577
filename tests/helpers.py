"""Building jobs, plans and driver options in a test, the way the command line does."""

from __future__ import annotations

from typing import Any

from harness import devices, load, tasks
from harness.bench.base import BenchSpec, PlanEnv
from harness.bench.collectives.base import CollectiveOptions
from harness.bench.driver import SuitePlan, plan_suite
from harness.bench.gemm import GemmOptions
from harness.bench.hpl import HplOptions
from harness.bench.kernel_ops import KernelOptions
from harness.bench.memory import MemoryOptions
from harness.config import compose as composer
from harness.config.job import Job

_OPTIONS = {
    "collectives": (CollectiveOptions, {"redops": "redops", "root": "root", "in_place": "in_place"}),
    "gemm": (GemmOptions, {"shapes": "shapes"}),
    "memory": (MemoryOptions, {"array_bytes": "array_bytes"}),
    "hpl": (HplOptions, {"hpl_n": "orders"}),
    "kernels": (KernelOptions, {"kernel_ops": "ops", "kernel_impls": "impls", "kernel_models": "models",
                                "kernel_tokens": "tokens", "kernel_timing": "timing"}),
}  # fmt: skip


def bench_spec(**kw: Any) -> BenchSpec:
    """BenchSpec from the flat keyword names (shapes=, hpl_n=, kernel_ops=, ...): the driver's
    fields stay, each plug-in's go into its options."""
    options = {}
    for group, (cls, names) in _OPTIONS.items():
        options[group] = cls(**{field: kw.pop(key) for key, field in names.items() if key in kw})
    base = {"dtypes": None, "warmup": 1, "iters": 2, "min_bytes": 1, "max_bytes": 1, "step_factor": 2}
    return BenchSpec(**{**base, **kw}, options=options)


def prepare(overrides: list[str]) -> Job:
    """The job of these overrides (task=NAME among them), validated as `harness` would."""
    task = next(o.split("=", 1)[1] for o in overrides if o.startswith("task="))
    return load.build(tasks.TASKS[task], composer.compose(overrides), launch=None)


def suite(job: Job) -> SuitePlan:
    """The suite a bench job would measure, planned as before the ranks start."""
    env = PlanEnv(device_type=job.device_type, free_memory_bytes=devices.free_memory_bytes(job.device_type),
                  world_size=job.world_size, ranks_per_host=job.nproc or 1)  # fmt: skip
    return plan_suite(job.plan.names, job.plan.spec, env)
