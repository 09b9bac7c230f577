"""argv -> jobs: the one place a command line becomes typed, validated jobs.

    load(parse(["bench", "all_reduce", "bench.dtype=float32,bfloat16", "-m"]))  # -> two Jobs

Hydra composes each job once (a `-m` sweep is expanded first, so every element is composed and
validated before the first one runs). A job is then typed and sealed, its device and ranks are
resolved, and its task's validate hook (from the registry) turns it into the task's plan.
Nothing here creates a file: a job that is refused leaves nothing behind.
"""

from __future__ import annotations

import functools
import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import devices, display, dist, tasks
from harness import launch as launch_module
from harness.config import compose as composer
from harness.config.compose import quote
from harness.config.job import JOB_FILE, Job, raw_values, secret_keys, typed
from harness.config.schema import RunConfig
from harness.config.validate import validate_common
from harness.errors import ConfigError, did_you_mean
from harness.results import RunRecord, new_run_id
from harness.results.provenance import REDACTED

HYDRA_FLAGS = {"-m": 0, "--multirun": 0, "--cfg": 1, "-c": 1, "--resolve": 0, "--package": 1, "-p": 1, "--info": 0}
"""Hydra's own flags that pass through, with the number of values each takes."""
RANK_COMMAND = launch_module.RANK_COMMAND
"""Hidden command: a rank started by the harness's own launcher, given its job file."""


@dataclass(frozen=True)
class Invocation:
    """A parsed command line: the task, its Hydra overrides and Hydra's own flags."""

    task: tasks.Task
    overrides: tuple[str, ...]
    flags: tuple[str, ...] = ()
    help: bool = False

    @property
    def multirun(self) -> bool:
        return "-m" in self.flags or "--multirun" in self.flags

    @property
    def shows_config(self) -> bool:
        """--cfg/-c or --info: Hydra prints the config instead of running it."""
        return any(f in self.flags for f in ("--cfg", "-c", "--info"))

    @property
    def hydra_launcher(self) -> str | None:
        """The launcher of `hydra/launcher=NAME` (e.g. submitit_slurm), when one is named."""
        for text in self.overrides:
            key, _, value = text.partition("=")
            if key.lstrip("+~") == "hydra/launcher" and value and value != "basic":
                return value
        return None


def parse(argv: list[str]) -> Invocation:
    """The task (longest matching name in the registry), its positional words and overrides."""
    task, rest = tasks.find(argv)
    if task is None and argv and tasks.group(argv[0]):
        subs = [t.name.split(" ", 1)[1] for t in tasks.group(argv[0])]
        word = argv[1] if len(argv) > 1 else ""
        raise ConfigError(f"unknown command {argv[0]} {word!r}{did_you_mean(word, subs)}; choices: {', '.join(subs)}")
    if task is None:
        word = argv[0] if argv else ""
        names = [*dict.fromkeys(n.split()[0] for n in tasks.TASKS), "slurm", "rerun"]
        raise ConfigError(f"unknown task {word!r}{did_you_mean(word, names)}; choices: {', '.join(names)} "
                          "(see harness --help)")  # fmt: skip
    overrides, flags, positional = [f"task={quote(task.name)}"], [], []
    wants_help = False
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in ("-h", "--help"):
            wants_help = True
        elif arg in HYDRA_FLAGS:
            flags.extend(rest[i : i + 1 + HYDRA_FLAGS[arg]])
            i += HYDRA_FLAGS[arg]
        elif arg.startswith("-") and "=" not in arg:
            raise ConfigError(f"unknown option {arg!r}{did_you_mean(arg, [*HYDRA_FLAGS, '--help'])}; options: "
                              f"--help, {', '.join(HYDRA_FLAGS)}")  # fmt: skip
        elif "=" in arg and not positional_only(task, positional):
            overrides.append(arg)
        else:
            positional.append(arg)
        i += 1
    overrides[1:1] = _positional(task, positional)
    return Invocation(task, tuple(overrides), tuple(flags), wants_help)


def positional_only(task: tasks.Task, seen: list[str]) -> bool:
    """SQL text may hold '=': the first bare argument of `results query` is always the query."""
    return task.positional == "sql" and not seen


def _positional(task: tasks.Task, words: list[str]) -> list[str]:
    """Overrides for the bare words after the task name."""
    if not words:
        return []
    if task.positional == "names":
        if len(words) > 1:
            raise ConfigError(f"unexpected argument {words[1]!r}; give benchmarks once (NAME,NAME) and then key=value")
        names = [n for n in words[0].split(",") if n]
        return [f"bench.names=[{','.join(quote(n) for n in names)}]"]
    if task.positional == "runs":
        return [f"results.runs=[{','.join(quote(w) for w in words)}]"]
    if task.positional == "sql":
        if len(words) > 1:
            raise ConfigError(f"unexpected argument {words[1]!r}; give the query as one quoted argument")
        return [f"results.sql={quote(words[0])}"]
    raise ConfigError(f"unexpected argument {words[0]!r}; give key=value")


def hook(task: tasks.Task, which: str) -> Callable[..., Any]:
    """A task's validate, run or help function, importing its module now (the registry's paths)."""
    module, _, name = getattr(task, which).partition(":")
    return getattr(importlib.import_module(module), name)


def elements(inv: Invocation, *, sweep: bool | None = None) -> list[list[str]]:
    """The overrides of every job: one list, or with a sweep (-m; a Slurm array) one per element
    of the cartesian product of its comma lists and ranges."""
    sweep = inv.multirun if sweep is None else sweep
    return composer.expand_sweep(list(inv.overrides)) if sweep else [list(inv.overrides)]


def load(inv: Invocation, *, sweep: bool | None = None) -> list[Job]:
    """Every job of the command line, composed once, typed, validated and planned (all of them
    before the first one runs)."""
    launch = dist.detect()
    parts = elements(inv, sweep=sweep)
    sweep_id = str(uuid.uuid4()) if len(parts) > 1 or inv.multirun else None
    return [build(inv.task, composer.compose(overrides), launch=launch, sweep_id=sweep_id) for overrides in parts]


def build(task: tasks.Task, cfg: DictConfig, *, launch: dist.LaunchEnv | None, sweep_id: str | None = None) -> Job:
    """A job from a composed config (the same path for argv, `rerun` and Hydra's launchers)."""
    cfg = composer.without_hydra(cfg)
    composer.refuse_unknown_keys(cfg)
    composer.canonical_dtypes(cfg)
    secrets = secret_keys(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
    config = typed(cfg)
    validate_common(config)
    if config.launch.bootstrap == "mpi" and (launch is None or launch.launcher not in ("mpi", "slurm")):
        where = f"under {launch.launcher}" if launch else "without a launcher (the harness starts its own ranks)"
        raise ConfigError(f"launch.bootstrap=mpi needs ranks started by MPI (mpiexec, or srun --mpi=pmi2|pmix), not "
                          f"{where}; use launch.bootstrap=auto")  # fmt: skip
    device_type = devices.resolve_device_type(config.device)
    if launch is None:
        nproc = devices.parse_nproc(config.launch.nproc, device_type)
        world: int | None = nproc
    else:  # under a launcher its ranks count (PMIx does not say how many before MPI starts)
        nproc, world = 0, launch.world_size if launch.world_size > 0 else None
    run_id = config.results.run_id or new_run_id(task.name.replace(" ", "-"))
    job = Job(task.name, config, device_type, run_id, world, nproc, sweep_id or config.results.sweep_id, secrets,
              raw_values(cfg, secrets))  # fmt: skip
    if launch is not None or not needs_ranks(job):
        return replace(job, plan=hook(task, "validate")(job), nproc=0)
    # More ranks than this host may start is the first thing to say, before what they would run.
    devices.check_local_ranks(nproc, device_type, warn=display.note)
    return replace(job, plan=hook(task, "validate")(job))


def needs_ranks(job: Job) -> bool:
    """Whether the job runs as ranks: the task's, unless its `local_when` key is set."""
    task = tasks.TASKS[job.task]
    return task.ranks and not (task.local_when and functools.reduce(getattr, task.local_when.split("."), job.config))


def from_run(run_dir: str, overrides: list[str]) -> Job:
    """`harness rerun RUN_DIR [key=value ...]`: the run's job file (or, for runs recorded before
    job files, its manifest's config) replayed, later overrides winning, as a new run."""
    folder = Path(run_dir)
    if (folder / JOB_FILE).is_file():
        stored = Job.read(folder / JOB_FILE)
        task, data = stored.task, stored.config_dict()
    else:
        try:
            manifest = RunRecord.load(folder).manifest
        except (OSError, ValueError):
            raise ConfigError(
                f"{run_dir!r} is not a run directory (no readable config.json or manifest.json)"
            ) from None
        task, data = manifest["task"], manifest.get("config", {})
    if task not in tasks.TASKS:
        raise ConfigError(f"{run_dir!r} was a {task!r} run, which this harness cannot repeat")
    for bad in (o for o in overrides if "=" not in o):
        raise ConfigError(f"unexpected argument {bad!r}; usage: harness rerun RUN_DIR [key=value ...]")
    base = OmegaConf.merge(OmegaConf.structured(RunConfig), _without_redacted(data))
    results = {"results": {"run_id": None, "sweep_id": None}}  # a new run of its own
    try:
        cfg = OmegaConf.merge(base, results, OmegaConf.from_dotlist(overrides))
    except Exception as exc:
        raise ConfigError(f"rerun overrides: {str(exc).splitlines()[0]}") from None
    assert isinstance(cfg, DictConfig)
    return build(tasks.TASKS[task], cfg, launch=dist.detect())


def _without_redacted(data: Any) -> Any:
    """Manifests before job files wrote secrets as '<redacted>': those keys take their defaults."""
    if isinstance(data, dict):
        return {k: _without_redacted(v) for k, v in data.items() if v != REDACTED}
    return data


def job_file_arg(path: str) -> Path:
    """The job file of `harness _rank PATH`, checked."""
    file = Path(path)
    if file.name != JOB_FILE or not file.is_file():
        raise ConfigError(f"'{RANK_COMMAND}' is internal: it runs a job file ({JOB_FILE}) under the harness's "
                          "own launcher")  # fmt: skip
    return file
