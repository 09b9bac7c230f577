"""The task registry: what each `harness` command is, in one place.

An entry is a light descriptor that imports nothing heavy: the task's name and one-line help,
the config sections it reads (the rest stays out of its manifest), where its full help text and
its sbatch template are, and the `module:function` paths of its two hooks:

- `validate(job) -> plan`: every check that can run before a rank starts, pure (it creates
  nothing), returning the task's frozen plan (parsed specs, model shape, hardware profile);
- `run(job, ctx, record) -> Outcome`: the task on one rank (`ctx` is None for tasks that start
  no ranks), reading `job.plan`; only planning that needs the world size happens here.

The task module is imported only when the task runs. The CLI, the runner, the help and the
Slurm scheduler read this table; adding a task is one module plus its config and an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED

COMMON_SECTIONS = ("task", "device", "seed", "launch", "results", "debug")
"""Config sections every task reads."""


@dataclass(frozen=True)
class Task:
    """One command of `harness`."""

    name: str
    """The words that name it on the command line ('bench', 'results compare')."""
    summary: str
    """One line for `harness --help`."""
    sections: tuple[str, ...]
    """Config sections the task reads besides COMMON_SECTIONS (its manifest keeps these)."""
    validate: str
    """'module:function' of validate(job) -> plan."""
    run: str
    """'module:function' of run(job, ctx, record) -> Outcome."""
    help: str | None = None
    """'module:function' returning the task's full help text (imports no torch)."""
    template: str | None = None
    """slurm/<template> that `harness slurm submit TASK` renders; None: not a batch task."""
    ranks: bool = True
    """True: runs as ranks of a process group (local launcher, torchrun, srun, mpiexec).
    False: runs in this process."""
    local_when: str | None = None
    """A boolean config key that, when true, makes the task run in this process without ranks
    (train.dry_run: a plan for any number of GPUs, on a laptop)."""
    records: bool = True
    """True: writes a run directory (manifest, rows, files)."""
    positional: str | None = None
    """What bare words after the task name are: 'names' (bench: NAME[,NAME...] -> bench.names),
    'runs' (run directories -> results.runs), 'sql' (the query text -> results.sql), or None."""

    @property
    def all_sections(self) -> tuple[str, ...]:
        return (*COMMON_SECTIONS, *self.sections)


_BENCH = ("bench", "telemetry", "fault")
_TRAIN = ("model", "engine", "data", "train", "logger", "parallel", "cluster", "hardware")
_RESULTS = ("results",)

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("bench", "microbenchmarks: matmul, memory, host link, HPL, collectives, kernels (harness bench --help)",
             _BENCH, "harness.bench.task:validate", "harness.bench.task:run", "harness.bench.help:text",
             "bench.sbatch", positional="names"),
        Task("train", "train a Llama-style model with DeepSpeed, FSDP or DDP: tokens/s, TFLOP/s, MFU (--help)",
             _TRAIN, "harness.train.task:validate", "harness.train.task:run", "harness.train.help:text",
             "train.sbatch", local_when="train.dry_run"),
        Task("accept", "hardware acceptance: health checks, benchmarks on every GPU, pass/fail gates (--help)",
             (*_BENCH, "hardware", "site", "accept", "cluster"), "harness.accept.task:validate",
             "harness.accept.task:run", "harness.accept.help:text", "accept.sbatch"),
        Task("project", "project training on a cluster: step time, where it goes, sustained FLOP/s, MFU (--help)",
             ("model", "train", "parallel", "cluster", "hardware", "project"), "harness.perf.task:validate",
             "harness.perf.task:run", "harness.perf.help:text", ranks=False),
        *(Task(f"results {name}", summary, (), f"harness.catalog.{module}:validate_{name}",
               f"harness.catalog.{module}:run_{name}", "harness.catalog.help:text", ranks=False,
               records=name in ("compare", "regress", "trend"), positional=positional)
          for name, module, positional, summary in (
              ("list", "task", None, "one line per run under results.dir: id, task, time, status, hosts, headline"),
              ("show", "task", "runs", "a run's manifest summary, tables and plots"),
              ("compare", "analysis", "runs", "runs side by side: rows matched by identity, ratios beyond noise"),
              ("baseline", "task", "runs", "name a run the baseline of a system or partition (results.name=)"),
              ("regress", "analysis", "runs", "a run against its baseline (results.baseline=): exit 1 if worse"),
              ("query", "task", "sql", "SQL (DuckDB) over the runs in place: views runs and rows"),
              ("export", "analysis", "runs", "runs as csv, prometheus or mllog on standard output"),
              ("trend", "analysis", None, "a metric against time per host or GPU (results.metric=)"),
          )),
    )
}  # fmt: skip
"""Every task, by name."""


def find(words: list[str]) -> tuple[Task | None, list[str]]:
    """The task named by the longest prefix of `words`, and the words after it."""
    for n in range(min(3, len(words)), 0, -1):
        task = TASKS.get(" ".join(words[:n]))
        if task is not None:
            return task, words[n:]
    return None, words


def group(word: str) -> list[Task]:
    """The tasks whose name starts with `word` and another word ('results' -> results list, ...)."""
    return [t for name, t in TASKS.items() if name.startswith(f"{word} ")]


def register(task: Task) -> None:
    """Add a task (tests and plug-ins; the built-in ones are in TASKS)."""
    TASKS[task.name] = task


@dataclass(frozen=True)
class Outcome:
    """How a task ended on this rank, and what rank 0 shows after the record is closed."""

    status: str = "ok"
    """ok | failed | interrupted."""
    error: str | None = None
    code: int = EXIT_OK
    """The exit code: 0 ok, 1 failed, 2 bad input, 75 preempted, 130 interrupted."""
    show: Callable[[], None] | None = None
    """Prints the task's tables and summary (rank 0, after the manifest is final)."""

    @property
    def reason(self) -> str:
        return reason_of(self.code)


REASONS = {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_BAD_INPUT: "bad_input", EXIT_INTERRUPTED: "interrupted",
           EXIT_PREEMPTED: "preempted"}  # fmt: skip
"""The manifest's `reason` for each exit code."""


def reason_of(code: int) -> str:
    """ok | failed | bad_input | interrupted | preempted for an exit code (other codes: failed)."""
    return REASONS.get(code, "failed")
