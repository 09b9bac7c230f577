"""The command line in this process: help texts and bad input (exit code 2, one line, no run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli


def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: harness TASK" in out
    assert "bench" in out
    for key in ("device=auto", "launch.nproc=auto", "results.dir=results", "launch.timeout_s=600"):
        assert key in out
    assert "torchrun --nproc-per-node N -m harness" in out and "srun -n N harness" in out


def test_bench_help_lists_benchmarks_and_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("gemm", "all_reduce", "bench.min_bytes=1K", "bench.step_factor=4", "bench.shapes=null",
                 "presets: bench=default|quick", "like nccl-tests -b"):  # fmt: skip
        assert text in out, text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deploy"], "unknown task 'deploy'; choices: bench, train"),
        (["bench"], "no benchmark named"),
        (["bench", "gemm", "all_reduce"], "unexpected argument 'all_reduce'"),
        (["bench", "gemm", "--nope"], "unknown option '--nope'"),
        (["bench", "gemm", "launch.nproc=0"], "launch.nproc=0 must be 'auto' or a whole number >= 1"),
        (["bench", "gemm", "launch.nproc=many"], "launch.nproc=many must be"),
        (["bench", "gemm$(reboot)"], "unknown benchmark 'gemm$(reboot)'"),
        (["bench", "all_reduce", "bench.max_bytes=1K,2X", "-m"], "'2X' is not a size"),
        (["bench", "all_reduce", "bench.dtype=[float32", "-m"], "cannot parse overrides"),
        (["bench", "gemm[/x]"], "unknown benchmark 'gemm[/x]'"),  # not rich markup
        (["bench", "gemm", "seed=-1"], "seed=-1 must be a whole number from 0 to 2^31 - 1"),
        (["bench", "memory", "bench.array_bytes=0"], "bench.array_bytes=0 must be at least 1 byte"),
        (["accept", "hardware=tpu-v9"], "unknown hardware preset 'tpu-v9'; choices: a100-sxm, auto, b200, cpu"),
        (["accept", "site=nowhere"], "unknown site preset 'nowhere'; choices: example, none"),
        (["accept", "accept.gemm_shapes=[12x]"], "accept.gemm_shapes: '12x' is not a shape"),
        (["accept", "accept.outlier_mad=-1"], "accept.outlier_mad=-1.0 must be a number >= 0"),
        (["accept", "accept.gemm_dtypes=[float128]"], "gemm_dtypes: unknown dtype 'float128' (did you mean 'float8'?)"),
        (["accept", "accept.gemm_dtypes=[float8]"], "accept.gemm_dtypes: float8 not available for gemm on cpu"),
        (["accept", "accept.comm_bytes=abc"], "accept.comm_bytes: 'abc' is not a size"),
        (["accept", "bench.iters=0"], "bench.iters=0 must be a whole number >= 1"),  # before any rank starts
        (["accept", "+site.references.gpu.bogus_tflops={value:1}"], "site.references.gpu.bogus_tflops: unknown metric"),
        (["accept", "+site.references.gpu.memory_triad_gbps={lower:-0.1}"], "must be {value: N, lower: F|null"),
        (["accept", "+site.references.gpu.memory_triad_gbps={value:9,lower:0.1,upper:-0.1}"], "lower=0.1 is above"),
        (
            ["accept", "hardware=cpu", "+hardware.thresholds.gemm_bf16=0.7"],
            "'gemm_bf16' (did you mean 'gemm_bfloat16'?)",
        ),
        (["accept", "gemm"], "unexpected argument 'gemm'; give key=value"),
        (["accept", "fault.slow_rank=7", "launch.nproc=4"], "fault.slow_rank=7 but the job has 4 ranks; choose 0..3"),
        (["bench", "gemm", "fault.corrupt_rank=-1"], "fault.corrupt_rank=-1 must be a rank"),
        (["accept", "fault.slow_factor=0.5"], "fault.slow_factor=0.5 must be a number >= 1"),
        (["bench", "kernels", "bench.kernel_ops=[layernorm]"], "bench.kernel_ops: unknown 'layernorm'; choices: rms"),
        (["bench", "kernels", "bench.kernel_impls=[fused]"], "fused needs a CUDA device (Triton); choices on cpu"),
        (["bench", "kernels", "bench.kernel_models=[gpt5]"], "bench.kernel_models: unknown 'gpt5'; choices: gpt3"),
        (["bench", "kernels", "bench.kernel_timing=graph"], "bench.kernel_timing=graph needs a CUDA device"),
        (["bench", "kernels", "bench.kernel_timing=fast"], "bench.kernel_timing: unknown 'fast'; choices: launch"),
        (["bench", "kernels", "bench.kernel_tokens=0"], "bench.kernel_tokens=0 must be a whole number >= 1"),
        (["bench", "kernels", "bench.dtype=float64"], "'float64' is not available for kernels on cpu; choices: bf"),
        (["bench", "kernels", "bench.kernel_models=[llama3-405b]", "bench.kernel_tokens=1000000"], "GiB is free"),
    ],
)
def test_bad_input(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    assert cli.run([*argv, f"results.dir={results}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not results.exists() or list(results.iterdir()) == []


def test_accept_help_lists_profiles_keys_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["accept", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("hardware=a100-sxm|auto|b200", "site=example|none", "accept.outlier_mad=4.0", "fault.slow_rank=null",
                 "exit codes: 0 every check passed, 1 a check failed, 2 bad input", "slurm/accept.sbatch"):  # fmt: skip
        assert text in out, text
