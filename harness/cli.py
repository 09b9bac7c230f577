"""`harness <task> ...`: the command line. It reads the task registry, hands argv to
`harness.load` (argv -> typed, validated jobs) and the jobs to `harness.runner`.

    harness bench gemm,all_reduce bench.dtype=float32 launch.nproc=2
    harness bench all_reduce bench.dtype=float32,bfloat16 -m      # a sweep: every job validated first
    torchrun --nproc-per-node 2 -m harness bench all_reduce      # ranks from the launcher

Bad input ends with one line and exit code 2, and no run directory.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from harness import __version__, display, dist, load, runner, tasks
from harness.config import compose as composer
from harness.config.docs import describe
from harness.config.schema import RunConfig
from harness.errors import EXIT_BAD_INPUT, EXIT_OK, ConfigError
from harness.results import new_run_id
from harness.scheduler import slurm


def run(argv: list[str]) -> int:
    """Parse, validate, run; returns the exit code."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return EXIT_OK
    if argv[0] == "--version":
        display.console.print(f"exaharness {__version__}")
        return EXIT_OK
    try:
        if argv[0] == load.RANK_COMMAND:
            return runner.rank_main(load.job_file_arg(argv[1] if len(argv) > 1 else ""))
        if argv[0] == "rerun":
            return _rerun(argv[1:])
        if argv[0] == "slurm":
            return _slurm(argv[1:])
        group = tasks.group(argv[0])
        if group and (len(argv) == 1 or argv[1] in ("-h", "--help", "help")):
            display.console.print(load.hook(group[0], "help")(), markup=False)
            return EXIT_OK if len(argv) > 1 else EXIT_BAD_INPUT
        inv = load.parse(argv)
        if inv.help:
            display.console.print(load.hook(inv.task, "help")(), markup=False)
            return EXIT_OK
        if inv.shows_config:
            return composer.show(list(inv.overrides), list(inv.flags))
        jobs = load.load(inv)  # every job of a sweep is valid before the first one runs
        if inv.hydra_launcher:
            return runner.run_with_hydra_launcher(inv, jobs)
        return runner.run_jobs(jobs)
    except ConfigError as exc:
        launched = dist.detect()
        if launched is None or launched.rank == 0:
            display.error_line(str(exc))
        return EXIT_BAD_INPUT


RERUN_USAGE = "usage: harness rerun RUN_DIR [key=value ...]"


def _rerun(args: list[str]) -> int:
    """`harness rerun RUN_DIR [key=value ...]`: the recorded job again, later overrides winning."""
    if not args or args[0] in ("-h", "--help"):
        display.console.print(f"{RERUN_USAGE}\n\nRuns a recorded run again from its config.json (runs recorded "
                              "before job files: from its manifest), as a new run directory beside it.\n\n"
                              "example:\n  harness rerun results/20261128T030000Z-bench-1a2b3c bench.iters=50",
                              markup=False)  # fmt: skip
        return EXIT_OK if args else EXIT_BAD_INPUT
    return runner.run_jobs([load.from_run(args[0], args[1:])])


SLURM_USAGE = ("usage: harness slurm submit TASK [NAME[,NAME]] [key=value ...] | harness slurm status JOB_ID|RUN_DIR "
               "[results.dir=PATH] | harness slurm collect JOB_ID|RUN_DIR [results.dir=PATH]")  # fmt: skip
SLURM_HELP = f"""{SLURM_USAGE}

submit   render slurm/<task>.sbatch with checked #SBATCH lines (slurm.* keys), save it and submission.json
         in a new run directory, submit it; the job writes its record into that directory.
         A sweep (comma lists) becomes one job array with slurm.array=true, one run directory per element.
status   the job's Slurm state (sacct once the controller has forgotten it) and the run's status
collect  the summary, and for a failed job the error and the last lines of its log

examples:
  harness slurm submit bench all_reduce slurm.nodes=2 slurm.ntasks_per_node=8 slurm.wait=true
  harness slurm submit train model=llama3-8b engine=fsdp slurm.nodes=8 slurm.gpus_per_node=8 slurm.time=04:00:00
  harness slurm submit bench all_reduce bench.dtype=float32,bfloat16 slurm.array=true
  harness slurm status 4242
  harness slurm collect 4242"""


def _slurm(args: list[str]) -> int:
    """harness slurm submit|status|collect."""
    if not args or args[0] in ("-h", "--help", "help"):
        display.console.print(SLURM_HELP, markup=False)
        return EXIT_OK if args else EXIT_BAD_INPUT
    if args[0] not in ("submit", "status", "collect"):
        raise ConfigError(SLURM_USAGE)
    if args[0] != "submit":
        if len(args) < 2:
            raise ConfigError(SLURM_USAGE)
        results_dir = next((a.split("=", 1)[1] for a in args[2:] if a.startswith("results.dir=")), "results")
        return (slurm.status if args[0] == "status" else slurm.collect)(args[1], results_dir)
    batch = [name for name, t in tasks.TASKS.items() if t.template]
    task, _ = tasks.find(args[1:])
    if task is None or not task.template:
        raise ConfigError(f"harness slurm submit needs a task ({', '.join(batch)}); {SLURM_USAGE}")
    inv = load.parse(args[1:])
    if inv.flags:
        raise ConfigError(
            "harness slurm submit takes no Hydra flags: a sweep becomes a job array with slurm.array=true"
        )
    elements = load.elements(inv, sweep=True)
    jobs = load.load(inv, sweep=True)  # every element valid before anything is submitted
    if len(jobs) > 1 and not jobs[0].config.slurm.array:
        raise ConfigError(f"the overrides make a sweep of {len(jobs)} jobs; add slurm.array=true")
    # What the batch script passes on: the user's overrides without the task, the slurm.* keys
    # (this submission spends them) and results.* (the submission pins where the run goes and its
    # id); each override's section read by Hydra's parser.
    kept = [[o for o in overrides if composer.section_of(o) not in ("task", "slurm", "results")]
            for overrides in elements]  # fmt: skip
    parent = jobs[0] if len(jobs) == 1 else replace(jobs[0], run_id=new_run_id(task.name))
    return slurm.submit([slurm.Element(j, tuple(k)) for j, k in zip(jobs, kept, strict=True)], parent)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    code = run(list(sys.argv[1:] if argv is None else argv))
    if dist.detect() is not None:
        dist.hard_exit(code)  # a rank: skip interpreter teardown (see dist.hard_exit)
    sys.exit(code)


def _keys_table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(f"{k}={d}") for k, d, _ in rows) + 2
    return "\n".join(f"  {f'{k}={d}':<{width}} {doc}" for k, d, doc in rows)


def print_help() -> None:
    """`harness --help`: the tasks (from the registry), the common keys and the launchers."""
    sections = ("device", "seed", "launch", "results.dir", "telemetry")
    common = [r for r in describe(RunConfig) if r[0].startswith(sections)]
    width = 10
    lines, grouped = [], set()
    for t in tasks.TASKS.values():
        word = t.name.split()[0]
        if " " not in t.name:
            lines.append(f"  {t.name:<{width}} {t.summary}")
        elif word not in grouped:  # a family of commands: one line, its --help lists them
            grouped.add(word)
            subs = "|".join(n.split()[1] for n in tasks.TASKS if n.split()[0] == word)
            lines.append(f"  {word:<{width}} {subs}: runs read back, compared, gated (harness {word} --help)")
    lines.append(f"  {'slurm':<{width}} submit a task as a batch job, follow it, collect it (harness slurm --help)")
    lines.append(f"  {'rerun':<{width}} repeat a recorded run from its config.json (harness rerun --help)")
    display.console.print(
        f"""exaharness {__version__}: distributed training and benchmarking harness

usage: harness TASK [NAME[,NAME...]] [key=value ...] [-m]

tasks:
{chr(10).join(lines)}

common keys (Hydra overrides; a comma list with -m sweeps):
{_keys_table(common)}

launchers: run as is (the harness starts launch.nproc local ranks), or under
  torchrun --nproc-per-node N -m harness ..., srun -n N harness ..., mpiexec -n N harness ...

examples:
  harness bench all
  harness bench gemm,all_reduce
  harness bench all_reduce bench.max_bytes=1G launch.nproc=8
  harness bench all_reduce bench.dtype=float32,bfloat16 -m
  harness bench all_reduce bench.dtype=fp32 --cfg job                  # print the composed config
  harness rerun results/20261128T030000Z-bench-1a2b3c [key=value ...]   # repeat a recorded run
  harness slurm submit bench all_reduce slurm.nodes=2 slurm.ntasks_per_node=8 slurm.wait=true

'harness TASK --help' lists a task's keys. The last line of a run is 'results: <run directory>'.
exit codes: 0 ok, 1 failed, 2 bad input, 75 preempted (train: checkpoint saved), 130 interrupted""",
        markup=False,
    )


__all__ = ["main", "print_help", "run"]
