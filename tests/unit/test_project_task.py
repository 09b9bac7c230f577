"""`harness project` (harness.perf.task) from the command line's words to its record, in this
process: the rows of a b200 scaling run, idle GPUs at 10,000, a given layout, a CPU projected from
calibration runs with predictions of held-out runs, and each bad input as one ConfigError line
before anything is written."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import load
from harness.config.compose import compose
from harness.config.job import Job, typed
from harness.errors import ConfigError
from harness.perf import comm
from harness.perf.report import text_table
from harness.perf.task import ProjectPlan, run
from harness.results import RunRecord, read_rows
from harness.units import bus_factor
from tests.unit.test_perf_calibrate import collective_rows, write_run
from tests.unit.test_perf_project import ROW_KEYS

LLAMA = ["train.seq_len=8192", "train.global_batch=2048", "train.micro_batch=1", "train.dtype=bf16"]
SMALL = ["model=small", "hardware=cpu", "cluster.gpus=[1,2]", "cluster.gpus_per_node=2", "train.seq_len=256",
         "train.micro_batch=4", "train.global_batch=8"]  # fmt: skip


def job(*args: str) -> Job:
    (found,) = load.load(load.parse(["project", *args]))
    return found


def record(tmp_path: Path, found: Job) -> RunRecord:
    return RunRecord.create(tmp_path / "results", task="project", config={}, launcher="local", world_size=1,
                            run_id=found.run_id)  # fmt: skip


def test_a_b200_run_records_rows_plots_and_the_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    found = job("model=llama3-70b", "hardware=b200", "cluster.gpus=[10000,1024]", *LLAMA)
    plan = found.plan
    assert isinstance(plan, ProjectPlan) and [r["gpus_requested"] for r in plan.rows] == [10000, 1024]
    assert all(set(r) >= ROW_KEYS for r in plan.rows) and {r["dtype"] for r in plan.rows} == {"bfloat16"}
    big = plan.rows[0]  # the summary answers for the largest count, wherever it was listed
    assert big["gpus_idle"] > 0 and big["gpus"] + big["gpus_idle"] == 10000  # 2,048 sequences: no layout uses 10,000
    assert big["aggregate_pflops"] == pytest.approx(big["tflops_per_device"] * big["gpus"] / 1e3)
    assert big["cluster_peak_pflops"] == pytest.approx(22500)
    parts = sum(big[k] for k in ("compute_s", "tp_comm_s", "cp_comm_s", "pp_bubble_s", "pp_p2p_s",
                                 "dp_comm_exposed_s", "optimizer_s"))  # fmt: skip
    assert parts == pytest.approx(big["step_time_s"])
    rec = record(tmp_path, found)
    outcome = run(found, None, rec)
    rows = read_rows(rec.path)
    assert [r["kind"] for r in rows] == ["projection", "projection"] and all(r["passed"] for r in rows)
    assert set(rec.manifest["files"]) == {"sustained.png", "breakdown.png"}
    assert (rec.path / "sustained.png").read_bytes()[:4] == b"\x89PNG"
    line = rec.manifest["summary"]["projection"]["line"]
    assert line.startswith("10,000 × b200, bf16: ") and " EF sustained of 22.5 EF peak (" in line
    assert f"{big['gpus_idle']:,} idle" in line
    assert outcome.show is not None
    outcome.show()
    out = capsys.readouterr().out
    assert out.rstrip().endswith(line) and "TP×CP×PP×DP" in out and "10,000" in out


def test_a_given_layout_fills_the_count_with_data_parallelism() -> None:
    plan = job("model=llama3-405b", "hardware=h100-sxm", "cluster.gpus=[8192,10000]", "parallel.tp=8", "parallel.pp=16",
               "train.activation_checkpointing=true", *LLAMA).plan  # fmt: skip
    first, second = plan.rows
    assert (first["tp"], first["pp"], first["dp_shard"], first["gpus_idle"]) == (8, 16, 64, 0)
    assert (second["gpus"], second["gpus_idle"]) == (8192, 1808)
    assert first["activation_checkpointing"] and first["hw_tflops_per_device"] > first["tflops_per_device"]


def test_without_parallel_keys_the_planner_chooses() -> None:
    (row,) = job("model=llama3-8b", "hardware=h100-sxm", "cluster.gpus=64", *LLAMA[:1], "train.global_batch=512",
                 "train.dtype=bf16").plan.rows  # fmt: skip
    assert row["gpus"] == 64 and row["fits"] and row["gpus_idle"] == 0


def train_run(path: Path, *, world: int, engine: str, step_s: float, threads: int) -> Path:
    """A `harness train` run of the small model as the harness records it (its step times given)."""
    model = dataclasses.asdict(typed(compose(["task=train", "model=small"])).model)
    dp = world
    config = {"model": model, "engine": {"name": engine, "zero_stage": 1},
              "train": {"seq_len": 256, "micro_batch": 4, "global_batch": 8, "dtype": "float32",
                        "activation_checkpointing": False}}  # fmt: skip
    layout = {"tp": 1, "pp": 1, "cp": 1, "dp_shard": dp, "dp_replicate": 1, "pp_schedule": "1f1b",
              "pp_virtual_stages": 1, "pp_microbatches": 8 // (4 * dp), "sequence_parallel": False}  # fmt: skip
    rows = [{"kind": "train", "step": s, "step_time_s": step_s * (3 if s <= 2 else 1), "warmup": s <= 2,
             "passed": True} for s in range(1, 9)]  # fmt: skip
    rows.append({"kind": "train_summary", "step_time_s": step_s, "passed": True})
    devices = [{"name": "AMD EPYC", "type": "cpu", "host": "vm", "threads_used": threads}] * world
    return write_run(path, rows, task="train", world_size=world, config=config, train={"layout": layout},
                     devices=devices)  # fmt: skip


@pytest.fixture
def cpu_runs(tmp_path: Path) -> dict[str, Path]:
    """Synthetic 2-rank runs with known α and β, GEMM rates, and a 1-rank train run."""
    gemm = [{"kind": "gemm", "dtype": "float32", "m": m, "n": m, "k": m, "tflops": 0.09, "passed": True}
            for m in (256, 512, 1024, 2048)]  # fmt: skip
    fit = [r for op in ("all_reduce", "all_gather", "reduce_scatter") for r in collective_rows(op, 1e-4, 1.2)
           if r["group_size"] == 2 and r["bytes"] % 2**20 == 0]  # fmt: skip
    held = [dict(r, bytes=3 * r["bytes"]) for r in fit]  # sizes the fit does not see, timed as the truth
    for row in held:
        op, n, size = row["op"], 2, row["bytes"]
        t = comm.ring_steps(op, n) * 1e-4 + bus_factor(op, n) * size / 1.2e9
        row.update(time_us=t * 1e6, busbw_gbps=size / t / 1e9 * bus_factor(op, n))
    return {
        "gemm": write_run(tmp_path / "gemm", gemm),
        "fit": write_run(tmp_path / "fit", fit),
        "held": write_run(tmp_path / "held", held),
        "one": train_run(tmp_path / "one", world=1, engine="ddp", step_s=1.2, threads=2),
        "ddp": train_run(tmp_path / "ddp", world=2, engine="ddp", step_s=1.3, threads=1),
        "fsdp": train_run(tmp_path / "fsdp", world=2, engine="fsdp", step_s=1.4, threads=1),
    }


def test_a_cpu_is_projected_from_calibration_and_predicts_held_out_runs(cpu_runs: dict[str, Path],
                                                                       tmp_path: Path) -> None:  # fmt: skip
    r = cpu_runs
    found = job(*SMALL, f"project.calibrate=[{r['gemm']},{r['fit']},{r['one']}]",
                f"project.check=[{r['held']},{r['ddp']},{r['fsdp']}]")  # fmt: skip
    plan = found.plan
    items = {row["item"]: row for row in plan.calibration}
    assert items["all_reduce/intra"]["alpha_us"] == pytest.approx(100) and items["all_reduce/intra"]["beta_gbps"] == (
        pytest.approx(1.2))  # fmt: skip
    assert items["gemm/float32"]["best_tflops"] == pytest.approx(0.09) and items["gemm/float32"]["threads_used"] == 1
    assert items["train/compute_scale"]["compute_scale"] > 0 and items["train/compute_scale"]["points"] == 1
    by_kind: dict[str, list[dict]] = {}
    for row in plan.predictions:
        by_kind.setdefault(row["of"], []).append(row)
    assert all(abs(p["error"]) < 1e-6 for op in ("all_reduce", "all_gather", "reduce_scatter") for p in by_kind[op])
    ddp, fsdp = by_kind["train"]
    assert (ddp["engine"], fsdp["engine"]) == ("ddp", "fsdp") and ddp["measured"] == 1.3
    assert all(math.isfinite(p["error"]) and p["abs_error"] == abs(p["error"]) for p in plan.predictions)
    rec = record(tmp_path, found)
    run(found, None, rec)
    kinds = [row["kind"] for row in read_rows(rec.path)]
    assert kinds.count("projection") == 2 and kinds.count("calibration") == 5 and "prediction" in kinds
    summary = rec.manifest["summary"]
    assert set(summary["predictions"]) == {"all_reduce", "all_gather", "reduce_scatter", "train"}
    assert summary["predictions"]["train"]["count"] == 2 and "train/compute_scale" in summary["calibration"]
    assert summary["projection"]["line"].startswith("2 × cpu, fp32: ")


BAD = [
    ("fixed layout, other count",
     ["model=llama3-405b", "hardware=b200", "cluster.gpus=10000", "parallel.tp=8", "parallel.pp=16",
      "parallel.dp_shard=64", *LLAMA],
     r"^cluster.gpus=10,000 is not divisible by the layout: .* = 8,192 GPUs \(10,000 / 8,192 = 1.221\)"),
    ("no network figures", ["model=small", "hardware=cpu", "cluster.gpus=2", "train.global_batch=8"],
     r"^hardware=cpu: the profile has no .*nic_gbit_per_s.*calibration runs"),
    ("unknown model", ["model=llama3-7b", "hardware=b200", "cluster.gpus=8", *LLAMA],
     r"unknown model preset 'llama3-7b' \(did you mean 'llama3-70b'\?\); choices: "),
    ("unknown hardware", ["model=small", "hardware=b20", "cluster.gpus=8", *LLAMA],
     r"unknown hardware preset 'b20' \(did you mean 'b200'\?\); choices: "),
    ("no count", ["model=small", "hardware=b200", *LLAMA], r"^cluster.gpus is not set"),
    ("bad range", ["model=small", "hardware=b200", "cluster.gpus=8..64", *LLAMA], r"a range needs its factor"),
    ("no batch", ["model=small", "hardware=b200", "cluster.gpus=8"], r"^train.global_batch=0: a projection needs"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_before_anything_is_written(args: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        job(*args, f"results.dir={tmp_path / 'results'}")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "results").exists()


def test_calibration_runs_of_another_device_or_benchmark_or_corrupt_are_refused(cpu_runs: dict[str, Path],
                                                                              tmp_path: Path) -> None:  # fmt: skip
    b200 = ["model=small", "hardware=b200", "cluster.gpus=8", "train.global_batch=8"]
    with pytest.raises(ConfigError, match=r"fit was measured on 'AMD EPYC', not on 'b200'; calibrate with runs"):
        job(*b200, f"project.calibrate=[{cpu_runs['fit']}]")
    memory = write_run(tmp_path / "memory", [{"kind": "memory", "kernel": "triad", "gbps": 10.0, "passed": True}])
    with pytest.raises(ConfigError, match=r"memory holds 'memory' rows \(row 1\); calibration takes bench runs"):
        job(*SMALL, f"project.calibrate=[{cpu_runs['gemm']},{memory}]")
    broken = write_run(tmp_path / "broken", [{"kind": "train", "step": 3, "step_time_s": 1.0, "passed": True}],
                       task="train", config={"model": {"dim": 8}, "train": {}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"broken is a train run whose manifest the model cannot cost \(KeyError"):
        job(*SMALL, f"project.calibrate=[{cpu_runs['gemm']},{cpu_runs['fit']},{broken}]")
    with (cpu_runs["fit"] / "rows.jsonl").open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(ConfigError, match=r"^project.check: .*fit is damaged \(rows.jsonl: .*\): corrupt file$"):
        job(*SMALL, f"project.calibrate=[{cpu_runs['gemm']}]", f"project.check=[{cpu_runs['fit']}]")


FUZZ_KEYS = ["cluster.gpus", "cluster.gpus_per_node", "parallel.tp", "parallel.pp", "parallel.cp", "parallel.dp_shard",
             "parallel.dp_replicate", "parallel.pp_schedule", "parallel.pp_virtual_stages", "parallel.pp_microbatches",
             "parallel.sequence_parallel", "train.seq_len", "train.global_batch", "train.micro_batch", "train.dtype",
             "train.activation_checkpointing", "model.n_layers", "model.n_heads", "model.dim", "project.calibrate",
             "project.check"]  # fmt: skip
FUZZ_VALUES = st.one_of(
    st.integers(min_value=-3, max_value=1100).map(str),
    st.sampled_from(["0", "1", "2", "8", "null", "true", "[]", "[8,16]", "8..64x2", "64..8x2", "8..64x1", "1.5", "x",
                     "bf16", "fp8", "float64", "gpipe", "interleaved_1f1b", "1f1b", "[/nonexistent]", "''"]),
)  # fmt: skip
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
"""Random command lines per run (about 0.25 s each); FUZZ_EXAMPLES=400 for a longer hunt."""


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.tuples(st.sampled_from(FUZZ_KEYS), FUZZ_VALUES).map("=".join), max_size=4))
def test_random_projections_plan_or_are_refused_in_one_line(overrides: list[str], tmp_path: Path) -> None:
    base = ["model=llama3-8b", "hardware=h100-sxm", "cluster.gpus=16", "train.seq_len=4096", "train.global_batch=64",
            "train.micro_batch=1", f"results.dir={tmp_path / 'results'}"]  # fmt: skip
    try:
        plan = job(*base, *overrides).plan
    except ConfigError as error:
        assert str(error) and "\n" not in str(error).strip()
    else:
        assert plan.rows and all(r["step_time_s"] > 0 and r["gpus"] + r["gpus_idle"] == r["gpus_requested"]
                                 for r in plan.rows)  # fmt: skip
    assert not (tmp_path / "results").exists()


def test_an_empty_table_is_its_header() -> None:
    assert text_table(["gpus", "mfu"], []).splitlines() == ["gpus  mfu", "----  ---"]
