"""The small things users hit (issue #9): every override checked with help, dtype spellings,
binary sizes, redaction by credential names, readable reports and lines."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli, display
from harness.accept import gates, report
from harness.accept.checks import Check
from harness.config.schema import number_keys
from harness.errors import ConfigError
from harness.results import SCHEMA_VERSION, RunRecord
from harness.results.provenance import REDACTED
from tests.helpers import prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=bench", "bench.names=[gem]"], "unknown benchmark 'gem' (did you mean 'gemm'?)"),
        (["task=train", "model=llama3-8"], "unknown model preset 'llama3-8' (did you mean 'llama3-8b'?)"),
        (["task=bench", "bench.names=[all_reduce]", "bench.max_bytes=1Gb"], "'1Gb' is in bits"),
        (["task=bench", "bench.names=[gemm]", "bench.dtype=bfloat"], "(did you mean 'bfloat16'?)"),
        (["task=bench", "bench.names=[gemm]", "launch.bootstrap=mpi"], "launch.bootstrap=mpi needs ranks started by"),
        (["task=bench", "bench.names=[gemm]", "launch.nproc=100000"], "more than this host can run"),
        (["task=bench", "bench.names=[gemm]", "launch.timeout_s=99999999999999999999"], "launch.timeout_s"),
        (["task=bench", "bench.names=[gemm]", "launch.timeout_s=90000"], "from 1 to 86,400"),
    ],
)
def test_refused_with_a_suggestion(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        prepare(overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_dtype_spellings_are_recorded_canonically() -> None:
    job = prepare(["task=train", "train.dtype=bf16", "train.dry_run=true"])
    assert job.config.train.dtype == "bfloat16"
    job = prepare(["task=bench", "bench.names=[gemm]", "bench.dtype=[fp32,double,half]"])
    assert job.plan.spec.dtypes == ("float32", "float64", "float16")
    job = prepare(["task=accept", "accept.gemm_dtypes=[fp32]"])
    assert job.plan.gemm_dtypes == ("float32",)


def test_more_ranks_than_cores_warns(capsys: pytest.CaptureFixture[str]) -> None:
    cores = os.cpu_count() or 1
    prepare(["task=bench", "bench.names=[all_reduce]", f"launch.nproc={cores + 1}"])
    assert f"share {cores} CPU cores" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["slurm", "--help"], ["rerun", "--help"], ["results", "--help"]])
def test_help_of_every_command_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(argv) == 0
    assert "usage: harness" in capsys.readouterr().out


def test_help_says_sizes_are_binary_and_shows_preset_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "1G = 1GB = 1GiB = 2^30 bytes" in out and "bf16=bfloat16" in out
    assert cli.run(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "model.dim=128" in out and "model.name=tiny" in out and "???" not in out
    assert "logger.wandb.mode=offline" in out and "train.deterministic=False" in out


def test_counts_are_not_redacted_but_credentials_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_plantedtoken12345")
    monkeypatch.setenv("NCCL_IB_HCA", "mlx5")
    config = {"bench": {"kernel_tokens": 512, "max_bytes": "64M"}, "logger": {"wandb": {"api_key": "wk-123"}},
              "db": {"password": "pw", "token_count": 3}}  # fmt: skip
    record = RunRecord.create(tmp_path, task="bench", config=config, launcher="local", world_size=1,
                              keep=number_keys() | {"db.token_count"})  # fmt: skip
    saved = json.loads((record.path / "manifest.json").read_text())
    assert saved["config"]["bench"] == {"kernel_tokens": 512, "max_bytes": "64M"}
    assert saved["config"]["logger"]["wandb"]["api_key"] == REDACTED and saved["config"]["db"]["password"] == REDACTED
    assert "hf_plantedtoken12345" not in (record.path / "manifest.json").read_text()
    assert "bench.kernel_tokens" in number_keys()


def test_results_readme_states_the_schema_version() -> None:
    assert f"version {SCHEMA_VERSION}" in (ROOT / "results" / "README.md").read_text()


def test_off_a_terminal_rows_are_printed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=buffer, force_terminal=False, width=200))

    class Bench:
        name, description = "gemm", "matmul"
        columns = (display.Column("tflops", "TFLOP/s", "{:.1f}"),)

    rows = [{"tflops": 1.5, "passed": True}]
    with display.Progress(1) as progress:
        progress.advance(1, 1, Bench(), rows)
    display.tables({"gemm": rows}, {"gemm": Bench()})
    assert buffer.getvalue().count("1.5") == 1  # the progress line; no table repeats it


def test_report_names_the_worst_subject_and_formats_units() -> None:
    checks = [Check("memory_triad_gbps", "gpu", f"n1 gpu{i}", "pass", "ok", value=v, unit="GB/s")
              for i, v in enumerate([2900.0, 2600.0, 2800.0])]  # fmt: skip
    (row,) = report.scorecard_rows(checks)
    assert row["detail"].startswith("n1 gpu1:")
    assert report._fmt(25 * 2**30, "B") == "25.0 GiB" and report._fmt(2600.0, "GB/s") == "2,600 GB/s"
    assert gates.title_of("gemm_bfloat16_tflops") == "GEMM bfloat16: best TFLOP/s of each GPU"


def test_a_training_line_shows_what_users_watch() -> None:
    from harness.train.task import step_line  # the training code imports torch and the model

    row = {"step": 3, "loss": 4.5, "lr": 1e-3, "grad_norm": 1.25, "tokens_per_s": 9000.0, "tflops_per_device": 0.01,
           "mfu": None, "step_time_s": 0.031, "peak_memory_bytes": 2**30}  # fmt: skip
    line = step_line(row, 40, 12.0)
    assert "grad 1.25" in line and "31 ms" in line and "mem 1.00 GiB" in line and "ETA 00:12" in line


def test_text_from_outside_is_printed_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A rank's error holds brackets ('[/__w/.../pair.cc:553]'); read as rich markup, it crashed
    the report of a failed Slurm job. Styled words still come out as words, not tags."""
    from harness.scheduler import slurm

    error = "rank 1: RuntimeError: [/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed"
    monkeypatch.setattr(slurm, "_manifest", lambda _run_dir: {"status": "failed", "error": error})
    (tmp_path / "slurm-7.out").write_text("[bold]not a style[/] [/x] host:fire:\n")
    assert slurm.show(tmp_path, "FAILED") == 1
    out = capsys.readouterr().out
    assert f"error: {error}" in out and "[bold]not a style[/] [/x] host:fire:" in out

    class Bench:
        name, description = "all_reduce", "sum"
        columns = (display.Column("busbw_gbps", "busbw", "{:.1f}"),)

    display.progress(1, 2, Bench(), [{"busbw_gbps": 2.0, "passed": False}])
    display.note("size [1/2] rounded")
    report.console([Check("gemm_float32_tflops", "gpu", "n1 gpu0", "fail", "slow [x]", value=1.0)], "fail", "", [])
    out = capsys.readouterr().out
    assert "busbw 2.0  WRONG" in out and "note: size [1/2] rounded" in out and "[red]" not in out
    assert "FLAGGED n1 gpu0" in out and "slow [x]" in out and "acceptance: FAIL" in out
