"""`harness <task> ...`: argv -> Hydra -> typed config -> the task. The only place that turns a
config into typed objects.

    harness bench gemm,all_reduce bench.dtype=float32 launch.nproc=2
    harness bench all_reduce bench.dtype=float32,bfloat16 -m      # a Hydra multirun sweep
    torchrun --nproc-per-node 2 -m harness bench all_reduce      # ranks from the launcher

Every job of a command (every element of a sweep) is composed and validated before anything
runs, so bad input ends with one line and exit code 2, and no run directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness import __version__, display, dist
from harness.bench import ALIASES, BENCHMARKS, is_known
from harness.bench.driver import SuitePlan
from harness.config import compose, expand_sweep, register_configs, resolve_nproc, to_typed
from harness.config.compose import config_dir, group_options
from harness.config.docs import describe
from harness.config.schema import BenchConfig, RunConfig
from harness.config.validate import validate_common, validate_faults
from harness.devices import resolve_device_type
from harness.errors import EXIT_BAD_INPUT, EXIT_OK, ConfigError

TASKS = {
    "bench": "microbenchmarks: matmul, memory, host link, HPL, collectives (see harness bench --help)",
    "train": "train a Llama-style model with DeepSpeed, FSDP or DDP: tokens/s, TFLOP/s, MFU (harness train --help)",
    "accept": "hardware acceptance: health checks, benchmarks on every GPU, pass/fail gates, bad nodes (--help)",
}
# Hydra's own flags that pass through (with the number of values each takes).
_HYDRA_FLAGS = {"-m": 0, "--multirun": 0, "--cfg": 1, "-c": 1, "--resolve": 0, "--package": 1, "-p": 1, "--info": 0}
_WORKER = "_rank"  # hidden task: a rank started by the harness's own local launcher


@dataclass
class Prepared:
    """A job's config, validated, with what it will run."""

    cfg: RunConfig
    plan: SuitePlan | None
    """The benchmark suite (bench only)."""
    device_type: str
    world_size: int | None = None


def prepare(overrides: list[str]) -> Prepared:
    """Compose and validate one job; ConfigError for anything wrong."""
    from harness.bench.task import plan_for

    cfg = to_typed(compose(overrides))
    validate_common(cfg)
    device_type = resolve_device_type(cfg.device)
    launch = dist.detect()
    if cfg.task == "train" and cfg.train.dry_run:  # a plan for any world size, on any machine
        world = resolve_nproc(cfg.launch.nproc, device_type, dry_run=True)
        per_host = world
    elif launch is None:  # the harness will start launch.nproc ranks on this host
        world = resolve_nproc(cfg.launch.nproc, device_type)
        per_host = world
    else:  # under a launcher, its ranks count (PMIx does not say how many before MPI starts)
        world = launch.world_size if launch.world_size > 0 else None
        per_host = launch.local_world_size
    if cfg.task == "train":
        from harness.train.task import validate

        validate(cfg, world or 1)
        return Prepared(cfg, None, device_type, world)
    if cfg.task == "accept":
        from harness.accept.task import validate as validate_accept

        validate_accept(cfg, world, device_type)
        return Prepared(cfg, None, device_type, world)
    validate_faults(cfg, world)
    plan = plan_for(cfg, device_type, world_size=world, ranks_per_host=per_host if device_type == "cpu" else 1)
    return Prepared(cfg, plan, device_type, world)


def _split(task: str, args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, hydra flags) from `NAME[,NAME...] key=value ... -m`."""
    overrides, flags, names = [f"task={task}"], [], None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _HYDRA_FLAGS:
            flags.extend(args[i : i + 1 + _HYDRA_FLAGS[arg]])
            i += 1 + _HYDRA_FLAGS[arg]
            continue
        if arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; options: --help, {', '.join(_HYDRA_FLAGS)}")
        if "=" not in arg and names is None and task == "bench":
            names = [n for n in arg.split(",") if n]
            for name in names:
                if not is_known(name):
                    raise ConfigError(f"unknown benchmark {name!r}; choices: {', '.join([*BENCHMARKS, *ALIASES])}")
        elif "=" not in arg:
            usage = "give benchmarks once (NAME,NAME) and then key=value" if task == "bench" else "give key=value"
            raise ConfigError(f"unexpected argument {arg!r}; {usage}")
        else:
            overrides.append(arg)
        i += 1
    if names is not None:
        overrides.insert(1, f"bench.names=[{','.join(names)}]")
    return overrides, flags


_codes: list[int] = []


def _task(cfg) -> int:
    """What hydra.main runs for each job (once, or once per sweep element)."""
    from hydra.core.hydra_config import HydraConfig

    from harness import launch as local_launch
    from harness import runner
    from harness.results import new_run_id

    try:
        job = prepare(list(HydraConfig.get().overrides.task))
        launch = dist.detect()
        nproc = resolve_nproc(job.cfg.launch.nproc, job.device_type) if launch is None else 0
    except ConfigError as exc:
        display.error_line(str(exc))
        _codes.append(EXIT_BAD_INPUT)
        return EXIT_BAD_INPUT
    if job.cfg.task == "train" and job.cfg.train.dry_run:
        from harness.train.task import dry_run

        record, row = dry_run(job.cfg, job.world_size or 1, launch.launcher if launch else "local")
        display.plan_table(row)
        display.console.print(f"results: {record.path}")
        code = EXIT_OK
    elif launch is None:
        run_dir = Path(job.cfg.results.dir) / new_run_id(job.cfg.task)
        code = local_launch.launch_local(nproc, [_WORKER, *HydraConfig.get().overrides.task], run_dir)
        if run_dir.exists():
            display.console.print(f"results: {run_dir}")
    else:
        code = runner.run_task(job.cfg, launch, job.device_type)
    _codes.append(code)
    return code


def _run_hydra(args: list[str]) -> int:
    import hydra

    register_configs()
    entry = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(_task)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "harness", *args]
    try:
        entry()
    finally:
        sys.argv = saved
    return max(_codes, default=EXIT_OK)


def _worker(overrides: list[str]) -> int:
    from harness import runner

    launch = dist.detect()
    if launch is None:
        raise ConfigError(f"'{_WORKER}' is internal: it runs under the harness's own launcher")
    job = prepare(overrides)
    return runner.run_task(job.cfg, launch, job.device_type)


SLURM_USAGE = ("usage: harness slurm submit TASK [NAME[,NAME]] [key=value ...] | harness slurm status JOB_ID|RUN_DIR "
               "[results.dir=PATH] | harness slurm collect JOB_ID|RUN_DIR [results.dir=PATH]")  # fmt: skip


def _slurm(args: list[str]) -> int:
    """harness slurm submit|status|collect."""
    from harness.scheduler import slurm

    if not args or args[0] not in ("submit", "status", "collect"):
        raise ConfigError(SLURM_USAGE)
    if args[0] == "submit":
        if len(args) < 2 or args[1] not in TASKS:
            raise ConfigError(f"harness slurm submit needs a task ({', '.join(TASKS)}); {SLURM_USAGE}")
        task, rest = args[1], args[2:]
        overrides, flags = _split(task, rest)
        if flags:
            raise ConfigError("harness slurm submit takes no -m: a sweep becomes a job array with slurm.array=true")
        jobs = expand_sweep(overrides)
        for job_overrides in jobs:  # every element valid before anything is submitted
            job = prepare(job_overrides)
        # The job gets the user's arguments as argv; slurm.* is spent here, results.dir comes from
        # the script (HARNESS_RESULTS, set to this results.dir).
        job_args = [a for a in rest if not a.startswith(("slurm.", "results.dir="))]
        if not job.cfg.slurm.array:
            if len(jobs) > 1:
                raise ConfigError(f"the overrides make a sweep of {len(jobs)} jobs; add slurm.array=true")
            return slurm.submit(job.cfg, job_args)
        names = [a for a in job_args if "=" not in a]
        elements = [names + [o for o in j if not o.startswith(("task=", "bench.names=", "slurm.", "results.dir="))]
                    for j in jobs]  # fmt: skip
        return slurm.submit(job.cfg, job_args, elements)
    if len(args) < 2:
        raise ConfigError(SLURM_USAGE)
    results_dir = next((a.split("=", 1)[1] for a in args[2:] if a.startswith("results.dir=")), "results")
    return (slurm.status if args[0] == "status" else slurm.collect)(args[1], results_dir)


def rerun_argv(args: list[str]) -> list[str]:
    """`harness rerun RUN_DIR [key=value ...]`: the command line that repeats a recorded run
    (its resolved config as overrides; later overrides win; redacted values are left out)."""
    import json

    from harness.results.provenance import REDACTED

    if not args or "=" in args[0]:
        raise ConfigError("usage: harness rerun RUN_DIR [key=value ...]")
    manifest = Path(args[0]) / "manifest.json"
    if not manifest.is_file():
        raise ConfigError(f"{args[0]!r} is not a run directory (no manifest.json)")
    recorded = json.loads(manifest.read_text())
    overrides: list[str] = []

    def flatten(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                flatten(f"{prefix}{key}.", item)
        elif value != REDACTED and prefix.rstrip(".") != "task":
            overrides.append(f"{prefix.rstrip('.')}={json.dumps(value)}")

    flatten("", recorded["config"])
    return [recorded["task"], *overrides, *args[1:]]


def run(argv: list[str]) -> int:
    """Parse, validate, run; returns the exit code."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return EXIT_OK
    if argv[0] == "--version":
        display.console.print(f"exaharness {__version__}")
        return EXIT_OK
    task, rest = argv[0], argv[1:]
    try:
        if task == _WORKER:
            return _worker(rest)
        if task == "rerun":
            return run(rerun_argv(rest))
        if task == "slurm":
            return _slurm(rest)
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; choices: {', '.join(TASKS)}, slurm, rerun (see harness --help)")
        if any(a in ("-h", "--help") for a in rest):
            print_task_help(task)
            return EXIT_OK
        overrides, flags = _split(task, rest)
        multirun = "-m" in flags or "--multirun" in flags
        for job in expand_sweep(overrides) if multirun else [overrides]:
            prepare(job)
    except ConfigError as exc:
        launch = dist.detect()
        if launch is None or launch.rank == 0:
            display.error_line(str(exc))
        return EXIT_BAD_INPUT
    return _run_hydra([*overrides, *flags])


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    code = run(list(sys.argv[1:] if argv is None else argv))
    if dist.detect() is not None:
        dist.hard_exit(code)  # a rank: skip interpreter teardown (see dist.hard_exit)
    sys.exit(code)


# ---------------------------------------------------------------- help


def _keys_table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(f"{k}={d}") for k, d, _ in rows) + 2
    return "\n".join(f"  {f'{k}={d}':<{width}} {doc}" for k, d, doc in rows)


def print_help() -> None:
    common = [r for r in describe(RunConfig) if not r[0].startswith(("bench.", "debug.", "task"))]
    tasks = "\n".join(f"  {name:<8} {doc}" for name, doc in TASKS.items())
    display.console.print(
        f"""exaharness {__version__}: distributed training and benchmarking harness

usage: harness TASK [NAME[,NAME...]] [key=value ...] [-m]

tasks:
{tasks}

common keys (Hydra overrides; a comma list with -m sweeps):
{_keys_table(common)}

launchers: run as is (the harness starts launch.nproc local ranks), or under
  torchrun --nproc-per-node N -m harness ..., srun -n N harness ..., mpiexec -n N harness ...

examples:
  harness bench all
  harness bench gemm,all_reduce
  harness bench all_reduce bench.max_bytes=1G launch.nproc=8
  harness bench all_reduce bench.dtype=float32,bfloat16 -m
  harness rerun results/20261128T030000Z-bench-1a2b3c [key=value ...]   # repeat a recorded run
  harness slurm submit bench all_reduce slurm.nodes=2 slurm.ntasks_per_node=8 slurm.wait=true
  harness slurm status 4242; harness slurm collect 4242

'harness TASK --help' lists a task's keys. The last line of a run is 'results: <run directory>'.""",
        markup=False,
    )


def print_train_help() -> None:
    from harness.config.schema import DataConfig, EngineConfig, ModelConfig, TrainConfig
    from harness.train.engines import ENGINES

    sections = [("train", TrainConfig), ("engine", EngineConfig), ("data", DataConfig), ("model", ModelConfig)]
    keys = [(f"{prefix}.{k}", d, doc) for prefix, cls in sections for k, d, doc in describe(cls)]
    display.console.print(
        f"""usage: harness train [key=value ...] [-m]

model presets: model={"|".join(group_options("model"))} (default tiny)
engines:       engine={"|".join(ENGINES)} (default deepspeed)

keys:
{_keys_table(keys)}

exit codes: 0 ok, 1 failed, 2 bad input, 75 preempted (checkpoint saved; rerun with train.resume=auto), 130 interrupted

examples:
  harness train                                             # tiny, DeepSpeed ZeRO-1, 2 CPU ranks
  harness train engine=ddp train.steps=30 model=small
  harness train engine.zero_stage=3 train.dtype=bfloat16 train.global_batch=8
  harness train engine=fsdp train.ckpt_every=10 train.resume=auto
  harness train model=llama3-70b train.dry_run=true launch.nproc=1024 train.seq_len=8192 train.dtype=bfloat16
  python -m harness.train.tokenize input.txt data.u16 && harness train data.kind=tokens data.path=data.u16""",
        markup=False,
    )


def print_accept_help() -> None:
    from harness.config.schema import AcceptConfig, FaultConfig, HardwareConfig

    sections = [("accept", AcceptConfig), ("hardware", HardwareConfig), ("fault", FaultConfig)]
    keys = [(f"{prefix}.{k}", d, doc) for prefix, cls in sections for k, d, doc in describe(cls)]
    display.console.print(
        f"""usage: harness accept [key=value ...]

Health checks, then gemm and memory on every GPU at once, all_reduce per node and across nodes,
and node-pair exchanges; each figure against the hardware profile, the site's references and
its peers (median and MAD). Writes report.html, report.md, junit.xml and exclude.txt.

hardware profiles: hardware={"|".join(group_options("hardware"))} (default auto: from the device name)
site references:   site={"|".join(group_options("site"))} (configs/site/<system>.yaml)

keys:
{_keys_table(keys)}

exit codes: 0 every check passed, 1 a check failed, 2 bad input

examples:
  harness accept                                            # hardware=auto, 2 CPU ranks here
  harness accept launch.nproc=8 accept.gpus_per_node=8      # one node of 8 GPUs
  srun -N 64 --ntasks-per-node 8 --gpus-per-node 8 harness accept site=mycluster
  sbatch -N 4 --gpus-per-node 8 slurm/accept.sbatch accept.gpus_per_node=8
  harness accept launch.nproc=4 fault.slow_rank=2           # check that detection works""",
        markup=False,
    )


def print_task_help(task: str) -> None:
    if task == "train":
        print_train_help()
        return
    if task == "accept":
        print_accept_help()
        return
    benches = "\n".join(
        f"  {b.name:<15} {b.description}\n  {'':<15} keys: {', '.join('bench.' + k for k in b.keys)}"
        for b in BENCHMARKS.values()
    )
    benches += "".join(f"\n  {alias:<15} = {','.join(names)}" for alias, names in ALIASES.items())
    keys = [(k if k.startswith("bench.") else f"bench.{k}", d, doc) for k, d, doc in describe(BenchConfig)]
    debug = [r for r in describe(RunConfig) if r[0].startswith("debug.")]
    display.console.print(
        f"""usage: harness {task} NAME[,NAME...] [key=value ...] [-m]

benchmarks:
{benches}

bench keys (defaults from the preset bench=default):
{_keys_table(keys)}

presets: bench={"|".join(group_options("bench"))}
fault injection (tests): {", ".join(f"{k}={d}" for k, d, _ in debug)}

examples:
  harness bench gemm bench.dtype=bfloat16 bench.shapes=[8192x8192x8192]
  harness bench all_reduce bench.min_bytes=1M bench.max_bytes=1G bench.step_factor=2
  harness bench gemm bench.dtype=bfloat16 bench.m=1024:8192:1024 bench.n=8192 bench.k=8192
  harness bench collectives bench.groups=2 bench.redop=[sum,max]
  harness bench memory bench.array_bytes=4G
  harness bench hpl bench.hpl_n=[16384]
  harness bench gemm,all_reduce bench=quick results.dir=/scratch/results""",
        markup=False,
    )
