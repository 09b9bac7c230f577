"""Batch scripts: golden files, and hostile values that must never reach a shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.schema import SlurmConfig
from harness.dist import expand_hostlist
from harness.errors import ConfigError
from harness.scheduler.render import MARKER, SlurmOptions, render
from harness.scheduler.slurm import gpu_note, options

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def test_bench_script_matches_its_golden_file() -> None:
    options = SlurmOptions(job_name="ar-2x2", nodes=2, ntasks_per_node=2, partition="debug", time="00:10:00",
                           exclude="n[3-4]", extra=("--exclusive",))  # fmt: skip
    assert render("bench", options) == (GOLDEN / "bench-2x2.sbatch").read_text()


def test_train_script_matches_its_golden_file() -> None:
    options = SlurmOptions(job_name="llama", nodes=8, gpus_per_node=8, account="ml-team", qos="high")
    script = render("train", options)
    assert script == (GOLDEN / "train-requeue.sbatch").read_text()
    # requeueable, warned before the time limit, resuming, and requeueing on the preemption code
    for needed in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@", "train.resume=auto", "scontrol requeue",
                   '"$@"', "-eq 75"):  # fmt: skip
        assert needed in script, needed


def test_options_sit_at_the_marker_after_the_template_defaults() -> None:
    lines = render("bench", SlurmOptions(job_name="mine")).splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
    assert lines[marker + 1] == "#SBATCH --job-name=mine"
    assert lines.index("#SBATCH --job-name=harness-bench") < marker  # the later line wins in sbatch


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SlurmOptions(job_name="x;touch /tmp/pwned"), "slurm.job_name="),
        (SlurmOptions(job_name="$(reboot)"), "slurm.job_name="),
        (SlurmOptions(job_name="a\nb"), "slurm.job_name="),
        (SlurmOptions(job_name="it's"), "slurm.job_name="),
        (SlurmOptions(partition="gpu`id`"), "slurm.partition="),
        (SlurmOptions(time="1h"), "slurm.time='1h' is not a time limit"),
        (SlurmOptions(exclude="n1 n2"), "slurm.exclude="),
        (SlurmOptions(extra=("--comment=$(id)",)), "slurm.extra"),
        (SlurmOptions(extra=("--wrap=x\n#SBATCH --uid=0",)), "slurm.extra"),
        (SlurmOptions(nodes=0), "slurm.nodes=0 must be a whole number >= 1"),
    ],
)
def test_hostile_or_wrong_values_are_refused(options: SlurmOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        render("bench", options)
    assert message in str(info.value)


def test_unknown_task() -> None:
    with pytest.raises(ConfigError, match="unknown task 'deploy' for Slurm"):
        render("deploy", SlurmOptions())


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("n[1-3,7]", ["n1", "n2", "n3", "n7"]),
        ("gpu-a[01-02],gpu-b05", ["gpu-a01", "gpu-a02", "gpu-b05"]),
    ],
)
def test_node_lists_as_scontrol_show_hostnames(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


def test_accept_script_matches_its_golden_file() -> None:
    options = SlurmOptions(job_name="accept-4x8", nodes=4, ntasks_per_node=8, gpus_per_node=8, partition="gpu",
                           time="00:20:00")  # fmt: skip
    script = render("accept", options)
    assert script == (GOLDEN / "accept-4x8.sbatch").read_text()
    assert 'srun --kill-on-bad-exit=1 harness accept "$@"' in script and "HARNESS_SITE_SETUP" in script


def test_a_submission_from_a_host_without_a_gpu_says_it_asks_for_none() -> None:
    """From a login node (no GPU) the job asks Slurm for no GPU unless slurm.gpus_per_node says."""
    login = options(SlurmConfig(nodes=2), cluster_gpus_per_node=None)
    assert login.gpus_per_node is None and "slurm.gpus_per_node=N" in (gpu_note(login, "cpu") or "")
    assert gpu_note(options(SlurmConfig(gpus_per_node=8)), "cpu") is None
    on_gpu = options(SlurmConfig(), cluster_gpus_per_node=8)
    assert on_gpu.gpus_per_node == 8 and gpu_note(on_gpu, "cuda") is None
