"""Batch scripts for `harness slurm submit`, rendered from the same templates admins submit by
hand (slurm/*.sbatch): the template's own #SBATCH lines stay, ours go at its marker line.

Nothing a user typed is ever parsed by a shell: option values are checked against what Slurm
accepts and written as `#SBATCH --key=value` lines (which sbatch reads, not bash), and the task
arguments go to sbatch as separate argv entries, which the script passes on as "$@".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError
from harness.tasks import TASKS

SLURM_DIR = Path(__file__).resolve().parents[2] / "slurm"
MARKER = "# HARNESS-SBATCH-OPTIONS"

# What each option may hold: Slurm's own syntax, nothing a shell or sbatch would read otherwise.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOSTLIST = re.compile(r"^[A-Za-z0-9._,\[\]-]{1,4096}$")
_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$|^\d+$|^(UNLIMITED|INFINITE)$")
_EXTRA = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9._,:@%/\[\]=+-]+)?$")


@dataclass(frozen=True)
class SlurmOptions:
    """What `slurm.*` asks of the scheduler."""

    job_name: str = "harness"
    nodes: int = 1
    ntasks_per_node: int | None = None
    gpus_per_node: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    exclude: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


def _check(key: str, value: str | None, pattern: re.Pattern[str], what: str) -> None:
    if value is not None and not pattern.match(value):
        raise ConfigError(f"slurm.{key}={value!r} is not {what}")


def validate(options: SlurmOptions) -> None:
    """Refuse any value that is not plain Slurm syntax (quotes, ;, $(), spaces, newlines...)."""
    _check("job_name", options.job_name, _NAME, "a job name (letters, digits, '.', '_', '-')")
    for key in ("partition", "account", "qos"):
        _check(key, getattr(options, key), _NAME, "a Slurm name (letters, digits, '.', '_', '-')")
    _check("time", options.time, _TIME, "a time limit (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)")
    _check("exclude", options.exclude, _HOSTLIST, "a node list (e.g. n[1-3],gpu07)")
    for key in ("nodes", "ntasks_per_node", "gpus_per_node"):
        value = getattr(options, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"slurm.{key}={value!r} must be a whole number >= 1")
    for line in options.extra:
        if not _EXTRA.match(str(line)):
            raise ConfigError(f"slurm.extra: {line!r} is not one --option[=value] of sbatch")


def sbatch_lines(options: SlurmOptions) -> list[str]:
    """The checked `#SBATCH` lines of `options`, in a fixed order (ConfigError for a hostile value)."""
    validate(options)
    pairs = [
        ("job-name", options.job_name), ("nodes", options.nodes), ("ntasks-per-node", options.ntasks_per_node),
        ("gpus-per-node", options.gpus_per_node), ("partition", options.partition), ("account", options.account),
        ("qos", options.qos), ("time", options.time), ("exclude", options.exclude),
    ]  # fmt: skip
    lines = [f"#SBATCH --{key}={value}" for key, value in pairs if value is not None]
    return lines + [f"#SBATCH {line}" for line in options.extra]


def render(task: str, options: SlurmOptions) -> str:
    """The template of `task` (its registry entry names it) with the options at its marker
    (later #SBATCH lines win in sbatch)."""
    entry = TASKS.get(task)
    if entry is None or not entry.template:
        batch = [name for name, t in TASKS.items() if t.template]
        raise ConfigError(f"unknown task {task!r} for Slurm; choices: {', '.join(batch)}")
    path = SLURM_DIR / entry.template
    template = path.read_text()
    if MARKER not in template:
        raise ConfigError(f"{path} has no '{MARKER}' line")
    head, tail = template.split(MARKER, 1)
    rest = tail.split("\n", 1)[1]  # the template after its marker line
    lines = [MARKER + " (rendered by harness slurm submit)", *sbatch_lines(options)]
    return head + "\n".join(lines) + "\n" + rest
