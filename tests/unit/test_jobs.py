"""One config build: argv -> Job (composed once, typed, sealed, planned) -> config.json -> the
ranks; the task registry drives the command line; measurements are frozen data."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli, load, runner, tasks
from harness.bench.driver import Measurement
from harness.bench.gemm import GemmCase
from harness.config import codec
from harness.config.job import JOB_FILE, Job
from harness.errors import ConfigError
from harness.results import read_manifest
from harness.tasks import Outcome, Task
from tests.helpers import prepare


def test_a_job_is_typed_sealed_and_planned(tmp_path: Path) -> None:
    job = prepare(["task=bench", "bench.names=[gemm]", "bench.dtype=[bf16,fp32]", "bench.max_bytes=1M",
                   "launch.nproc=2", f"results.dir={tmp_path}/new"])  # fmt: skip
    assert job.nproc == 2 and job.world_size == 2 and job.device_type == "cpu"
    assert job.plan.spec.dtypes == ("bfloat16", "float32") and job.plan.spec.max_bytes == 2**20
    assert job.config.bench.dtype == ["bfloat16", "float32"]  # recorded under the canonical names
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.config.bench.iters = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.nproc = 4  # type: ignore[misc]
    assert not (tmp_path / "new").exists()  # validation creates nothing


def test_the_job_file_round_trips_and_keeps_secrets_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-plantedvalue123")
    job = prepare(["task=bench", "bench.names=[all_reduce]", "slurm.job_name=${oc.env:MY_SERVICE_API_KEY}",
                   f"results.dir={tmp_path}"])  # fmt: skip
    assert job.config.slurm.job_name == "sk-plantedvalue123"  # the job itself sees the value
    path = job.write(tmp_path / job.run_id)
    text = path.read_text()
    assert "sk-plantedvalue123" not in text and "${oc.env:MY_SERVICE_API_KEY}" in text
    data = json.loads(text)
    assert data["plan"]["__type__"] == "harness.bench.task:BenchPlan" and data["secrets"] == ["slurm.job_name"]
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-on-the-rank")  # each rank resolves it from its own environment
    back = Job.read(path)
    assert back.config.slurm.job_name == "sk-on-the-rank"
    assert back.plan == job.plan and back.run_id == job.run_id and back.nproc == job.nproc
    assert back.config.bench == job.config.bench


def test_codec_refuses_types_outside_the_harness() -> None:
    with pytest.raises(ValueError, match="only harness types"):
        codec.decode({"__type__": "os:system"})
    with pytest.raises(TypeError):
        codec.encode({1: "not a str key"})
    assert codec.decode(codec.encode((1, (2, 3), [4]))) == (1, (2, 3), [4])


def test_a_damaged_job_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / JOB_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the job file"):
        Job.read(tmp_path / JOB_FILE)


def test_unknown_added_keys_are_refused() -> None:
    for override in ("+bench.foo=1", "++bench.max_byte=4K"):
        with pytest.raises(ConfigError, match=r"unknown config key 'bench\.(foo|max_byte)'"):
            prepare(["task=bench", "bench.names=[gemm]", override])
    with pytest.raises(ConfigError, match="did you mean 'max_bytes'"):
        prepare(["task=bench", "bench.names=[gemm]", "++bench.max_byte=4K"])


def test_measurements_are_frozen_picklable_data() -> None:
    m = Measurement(GemmCase("float32", 8, 8, 8), 0, 0, "h", 0, 1e-3, 9e-4, 2e-3, {"passed": True}, {})
    again = pickle.loads(pickle.dumps(m))
    assert again == m and not any(callable(getattr(m, f.name)) for f in dataclasses.fields(m))
    row = m.to_row("gemm", 1, {"tflops": 1.0})
    assert row["kind"] == "gemm" and row["shape"] == "8x8x8" and "bench" not in row
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.rank = 1  # type: ignore[misc]


def _hello_validate(job: Job) -> str:
    return "planned"


def _hello_run(job: Job, ctx: object, record: object) -> Outcome:
    assert ctx is None and job.plan == "planned"
    record.add_rows([{"kind": "hello", "passed": True}])  # type: ignore[attr-defined]
    return Outcome("ok", None, 0, lambda: print("hello shown"))


def test_a_new_task_is_one_registry_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A task added to the registry is parsed, helped, validated and run with no other change."""
    entry = Task("hello", "says hello", (), f"{__name__}:_hello_validate", f"{__name__}:_hello_run",
                 f"{__name__}:_hello_help", ranks=False)  # fmt: skip
    monkeypatch.setitem(tasks.TASKS, "hello", entry)
    assert cli.run(["--help"]) == 0 and "hello" in capsys.readouterr().out
    assert cli.run(["hello", "--help"]) == 0 and "usage: harness hello" in capsys.readouterr().out
    assert cli.run(["hello", f"results.dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "hello shown" in out
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    manifest = read_manifest(run_dir)
    assert manifest["task"] == "hello" and manifest["status"] == "ok"
    assert (manifest["exit_code"], manifest["reason"]) == (0, "ok")
    assert (run_dir / JOB_FILE).is_file()


@pytest.mark.parametrize(("rank", "runs"), [(0, 1), (1, 0)])
def test_a_task_without_ranks_under_a_launcher_runs_once_without_a_group(
    rank: int, runs: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`srun -n 4 harness project ...` or a dry run inside torchrun: rank 0 runs it, in-process,
    and no process group is started (before: every rank ran dist.init and wrote a record)."""
    entry = Task("hello", "says hello", (), f"{__name__}:_hello_validate", f"{__name__}:_hello_run",
                 f"{__name__}:_hello_help", ranks=False)  # fmt: skip
    monkeypatch.setitem(tasks.TASKS, "hello", entry)
    for key, value in {"RANK": rank, "WORLD_SIZE": 4, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 1}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(runner, "run_rank", lambda *_: pytest.fail("a task without ranks joined a process group"))
    assert cli.run(["hello", f"results.dir={tmp_path}"]) == 0
    assert capsys.readouterr().out.count("hello shown") == runs


def _hello_help() -> str:
    return "usage: harness hello"


def test_unknown_task_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'bnech' \(did you mean 'bench'\?\)"):
        load.parse(["bnech", "gemm"])


def test_help_imports_no_torch() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", "--help"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "usage: harness TASK" in done.stdout
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert "harness.cli" in imported and not [m for m in imported if m.split(".")[0] == "torch"]
