"""`harness project` through the real command line: a b200 scaling curve (rows, the two plots,
the summary line), each bad input (exit 2, one line on stderr, no run directory), and the
"measured here" calibration: 2-rank runs of this machine (gemm, the collectives at some sizes,
`small` on 1 rank) fitted, then the collectives at other sizes and `small` under DDP and FSDP on
2 ranks predicted, with their errors reported. The errors' size is a measurement
(benchmarks/projection_measured.py, docs/benchmarks/projection.md), not asserted here."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.conftest import Run, run_cmd

pytestmark = pytest.mark.integration

LLAMA = ["train.seq_len=8192", "train.global_batch=2048", "train.micro_batch=1", "train.dtype=bf16"]
TRAIN = ["harness", "train", "model=small", "train.steps=5", "train.seq_len=128", "train.micro_batch=2",
         "train.global_batch=4", "train.resume=never", "telemetry.enabled=false"]  # fmt: skip
SMALL = ["model=small", "hardware=cpu", "cluster.gpus=[1,2]", "cluster.gpus_per_node=2", "train.seq_len=128",
         "train.micro_batch=2", "train.global_batch=4"]  # fmt: skip


def harness(*args: str, results: Path, timeout: float = 180) -> Run:
    return run_cmd(["harness", *args, f"results.dir={results}"], timeout=timeout)


def measured(*args: str, results: Path) -> Path:
    run = harness(*args, results=results)
    assert run.proc.returncode == 0 and run.run_dir is not None, run.output
    return run.run_dir


def test_a_b200_scaling_run(tmp_path: Path) -> None:
    run = harness("project", "model=llama3-70b", "hardware=b200", "cluster.gpus=8..16384x2", *LLAMA,
                  results=tmp_path)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    run.validate()
    rows = run.rows
    assert [r["gpus"] for r in rows] == [8 * 2**i for i in range(12)] and {r["kind"] for r in rows} == {"projection"}
    assert all(r["dtype"] == "bfloat16" and r["step_time_s"] > 0 and r["mfu"] for r in rows)
    manifest = run.manifest
    assert manifest["status"] == "ok" and {"sustained.png", "breakdown.png"} <= set(manifest["files"])
    assert all((run.run_dir / name).stat().st_size > 10_000 for name in ("sustained.png", "breakdown.png"))
    line = manifest["summary"]["projection"]["line"]
    assert line.startswith("16,384 × b200, bf16: ") and " EF sustained of 36.9 EF peak (" in line
    assert line in run.proc.stdout and run.proc.stdout.rstrip().splitlines()[-1].startswith("results: ")


COLLECTIVES = ["bench", "all_reduce,all_gather,reduce_scatter", "launch.nproc=2", "bench.step_factor=4",
               "bench.iters=10", "bench.warmup=2", "telemetry.enabled=false"]  # fmt: skip
MEASURED = {
    "gemm": ["bench", "gemm", "launch.nproc=2", "bench.dtype=float32", "bench.iters=5", "bench.warmup=1",
             "bench.shapes=[256x256x256,512x512x512,256x2048x384]", "telemetry.enabled=false"],
    "fit": [*COLLECTIVES, "bench.min_bytes=64K", "bench.max_bytes=4M"],
    "held": [*COLLECTIVES, "bench.min_bytes=128K", "bench.max_bytes=2M"],
    "one": [*TRAIN[1:], "engine=ddp", "launch.nproc=1"],
    "ddp": [*TRAIN[1:], "engine=ddp", "launch.nproc=2"],
    "fsdp": [*TRAIN[1:], "engine=fsdp", "launch.nproc=2"],
    "memory": ["bench", "memory", "launch.nproc=1", "bench.array_bytes=1M", "bench.iters=3", "bench.warmup=1",
               "telemetry.enabled=false"],
}  # fmt: skip
"""2-rank measurements of this machine (and `small` on 1 rank) to calibrate on and to predict, and
a run of a benchmark calibration does not take (memory)."""


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("measured")
    return {name: measured(*args, *([f"train.ckpt_dir={out}/ck"] if args[0] == "train" else []), results=out)
            for name, args in MEASURED.items()}  # fmt: skip


def test_calibrated_on_this_machine_it_predicts_held_out_sizes_and_two_ranks(here: dict[str, Path],
                                                                           tmp_path: Path) -> None:  # fmt: skip
    run = harness("project", *SMALL, f"project.calibrate=[{here['gemm']},{here['fit']},{here['one']}]",
                  f"project.check=[{here['held']},{here['ddp']},{here['fsdp']}]", results=tmp_path)  # fmt: skip
    assert run.proc.returncode == 0, run.output
    run.validate()
    fitted_sizes = {r["bytes"] for r in json_rows(here["fit"])}
    predictions = [r for r in run.rows if r["kind"] == "prediction"]
    collective = [p for p in predictions if p["of"] in ("all_reduce", "all_gather", "reduce_scatter")]
    assert collective and not {p["bytes"] for p in collective} & fitted_sizes  # sizes the fit did not see
    train = [p for p in predictions if p["of"] == "train"]
    assert [(p["engine"], p["world_size"]) for p in train] == [("ddp", 2), ("fsdp", 2)]
    assert all(math.isfinite(p["error"]) and p["measured"] > 0 and p["predicted"] > 0 for p in predictions)
    calibration = {r["item"] for r in run.rows if r["kind"] == "calibration"}
    assert {"all_reduce/intra", "gemm/float32", "train/compute_scale"} <= calibration
    summary = run.manifest["summary"]
    assert set(summary["predictions"]) == {"all_reduce", "all_gather", "reduce_scatter", "train"}
    for op in ("all_reduce", "reduce_scatter", "all_gather", "train"):
        assert f"check {op}: median |error| " in run.proc.stdout
    assert "rms residual" in run.proc.stdout and "2 × cpu, fp32: " in run.proc.stdout


def json_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines() if line.strip()]


def bad_inputs(here: dict[str, Path], tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(here["fit"], corrupt)
    (corrupt / "rows.jsonl").chmod(0o644)
    with (corrupt / "rows.jsonl").open("a") as fh:
        fh.write('{"kind": "all_reduce", "bytes": 1')
    b200 = ["model=small", "hardware=b200", "cluster.gpus=8", "train.global_batch=8"]
    return {
        "count not divisible by the layout": (
            ["model=llama3-405b", "hardware=b200", "cluster.gpus=10000", "parallel.tp=8", "parallel.pp=16",
             "parallel.dp_shard=64", *LLAMA], "is not divisible by the layout"),
        "profile without network figures": (["model=small", "hardware=cpu", "cluster.gpus=2", "train.global_batch=4"],
                                            "hardware=cpu: the profile has no"),
        "calibration run of another device": ([*b200, f"project.calibrate=[{here['fit']}]"],
                                              "was measured on 'AMD EPYC', not on 'b200'"),
        "calibration run of another benchmark": ([*SMALL, f"project.calibrate=[{here['gemm']},{here['memory']}]"],
                                                 "holds 'memory' rows"),
        "corrupt calibration file": ([*SMALL, f"project.calibrate=[{here['gemm']},{corrupt}]"], "is damaged"),
        "unknown model": (["model=llama3-7b", "hardware=b200", "cluster.gpus=8", *LLAMA], "did you mean 'llama3-70b'"),
        "unknown hardware": (["model=small", "hardware=b20", "cluster.gpus=8", *LLAMA], "did you mean 'b200'"),
    }  # fmt: skip


BAD = ["count not divisible by the layout", "profile without network figures", "calibration run of another device",
       "calibration run of another benchmark", "corrupt calibration file", "unknown model",
       "unknown hardware"]  # fmt: skip
"""The keys of bad_inputs, which needs the measured runs (a fixture) to build its arguments."""


@pytest.mark.parametrize("name", BAD)
def test_bad_input_exits_2_in_one_line_without_a_run_directory(name: str, here: dict[str, Path],
                                                                tmp_path: Path) -> None:  # fmt: skip
    args, expected = bad_inputs(here, tmp_path)[name]
    results = tmp_path / "results"
    run = harness("project", *args, results=results)
    assert run.proc.returncode == 2, run.output
    lines = run.proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], run.output
    assert not results.exists(), f"a refused projection left {list(results.iterdir())}"
