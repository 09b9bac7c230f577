"""Calibration (harness.perf.calibrate): known α and β come back from synthetic rows; rows of the
wrong kind or device, runs that failed and corrupt files are refused with one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.hardware import profiles
from harness.perf import comm
from harness.perf.calibrate import (
    calibrate,
    check_rows,
    device_from_calibration,
    fit_collective,
    fit_compute_scale,
    fit_gemm,
    read_measured,
)
from harness.perf.device import device_from_profile
from harness.perf.layout import Layout
from harness.perf.measured import train_case
from harness.perf.shape import ModelShape
from harness.perf.step import estimate_step
from harness.perf.workload import Workload
from harness.units import bus_factor


def write_run(path: Path, rows: list[dict], *, task: str = "bench", status: str = "ok", **manifest: object) -> Path:
    """A run directory as harness.results reads it: a manifest (one CPU host unless `manifest`
    says otherwise) and rows.jsonl."""
    path.mkdir(parents=True, exist_ok=True)
    base = {"run_id": path.name, "task": task, "status": status, "started_at": "2026-12-01T00:00:00Z",
            "world_size": 2, "hosts": ["vm"], "rows": len(rows),
            "devices": [{"name": "AMD EPYC", "type": "cpu", "host": "vm", "threads_used": 1}] * 2}  # fmt: skip
    (path / "manifest.json").write_text(json.dumps({**base, **manifest}))
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def collective_rows(op: str, alpha_s: float, beta_gbps: float, *, noise: float = 0.0, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for n in (2, 4, 8):
        for size in (2**k for k in range(10, 31, 2)):
            t = comm.ring_steps(op, n) * alpha_s + bus_factor(op, n) * size / (beta_gbps * 1e9)
            t *= 1 + rng.uniform(-noise, noise)
            rows.append({"bench": op, "op": op, "bytes": size, "time_us": t * 1e6, "group_size": n, "world_size": n,
                         "busbw_gbps": size / t / 1e9 * bus_factor(op, n), "passed": True})  # fmt: skip
    return rows


@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter", "sendrecv"])
def test_known_alpha_and_beta_are_recovered(op: str) -> None:
    fit = fit_collective(collective_rows(op, 20e-6, 12.0), op)
    assert fit.alpha_s == pytest.approx(20e-6, rel=1e-6) and fit.beta_gbps == pytest.approx(12.0, rel=1e-6)
    assert fit.rms_error < 1e-9


def test_noisy_rows_give_close_figures_and_residuals() -> None:
    fit = fit_collective(collective_rows("all_reduce", 50e-6, 2.0, noise=0.03, seed=1), "all_reduce")
    assert fit.alpha_s == pytest.approx(50e-6, rel=0.1) and fit.beta_gbps == pytest.approx(2.0, rel=0.05)
    assert 0 < fit.rms_error < 0.03
    # a size the fit did not see: its busbw within a few percent of the truth
    truth = collective_rows("all_reduce", 50e-6, 2.0)[0]
    n, size = 2, 3 * 2**20
    expected = size / (2 * 50e-6 + size / 2e9) / 1e9
    assert fit.busbw_gbps(size, n) == pytest.approx(expected, rel=0.05) and truth["group_size"] == 2


def test_calibration_lands_on_the_device() -> None:
    rows = collective_rows("all_reduce", 20e-6, 12.0) + [
        {"bench": "gemm", "dtype": "bfloat16", "m": m, "n": m, "k": m, "tflops": 2 * m**3 / (2 * m**3 / 500e12 + 1e-5)
         / 1e12} for m in (256, 1024, 4096, 8192)
    ]  # fmt: skip
    calibration = calibrate(rows, peak_tflops={"bfloat16": 989})
    device = calibration.apply(device_from_profile(profiles()["h100-sxm"]))
    assert ("all_reduce", "intra") in device.collectives
    span = comm.group_span(8, 1, 8)
    t = comm.collective_time_s("all_reduce", 1e9, span, device)
    assert t == pytest.approx(14 * 20e-6 + 2 * 7 / 8 * 1e9 / 12e9)
    gemm = calibration.gemm["bfloat16"]
    assert gemm.best_tflops == pytest.approx(2 * 8192**3 / (2 * 8192**3 / 500e12 + 1e-5) / 1e12)
    assert gemm.fraction_of_peak == pytest.approx(gemm.best_tflops / 989)
    assert device.gemm_ceiling_tflops("bfloat16") == gemm.best_tflops
    assert set(calibration.residuals()) == {"all_reduce/intra", "gemm/bfloat16"}


def test_gemm_fit_finds_the_fixed_cost() -> None:
    rows = [{"bench": "gemm", "dtype": "bf16", "m": m, "n": m, "k": m, "tflops": 2 * m**3 / (2 * m**3 / 400e12 + 8e-6)
             / 1e12} for m in (512, 1024, 2048, 16384)]  # fmt: skip
    fit = fit_gemm(rows, dtype="bfloat16")
    assert fit.fixed_s == pytest.approx(8e-6, rel=0.1) and max(abs(r) for r in fit.residuals) < 0.1
    with pytest.raises(ConfigError, match="no gemm rows of dtype float8"):
        fit_gemm(rows, dtype="fp8")


def test_compute_scale() -> None:
    scale, residuals = fit_compute_scale([(2.2, 1.0, 0.2), (4.4, 2.0, 0.4), (2.2, 1.0, 0.2)])
    assert scale == pytest.approx(2.0) and residuals == pytest.approx((0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="leaves no time for the modelled compute"):
        fit_compute_scale([(0.1, 1.0, 0.2)])


def test_rows_of_another_benchmark_or_device_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"a run holds 'hpl' rows \(row 2\); calibration takes bench runs"):
        check_rows([{"bench": "gemm"}, {"bench": "hpl"}])
    with pytest.raises(ConfigError, match=r"measured on 'NVIDIA A100-SXM4-80GB', not on 'h100-sxm'"):
        check_rows([{"bench": "gemm", "device_name": "NVIDIA A100-SXM4-80GB", "device_type": "cuda"}],
                   device="h100-sxm")  # fmt: skip
    check_rows([{"bench": "gemm", "device_name": "NVIDIA H100 80GB HBM3", "device_type": "cuda"}], device="h100-sxm")
    with pytest.raises(ConfigError, match="all_reduce needs rows at two or more sizes"):
        fit_collective(collective_rows("all_reduce", 1e-5, 1.0)[:1], "all_reduce")


def test_corrupt_failed_and_missing_runs_are_refused(tmp_path: Path) -> None:
    run = write_run(tmp_path / "rows", collective_rows("all_reduce", 1e-5, 1.0)[:2])
    with (run / "rows.jsonl").open("a") as fh:
        fh.write('{"kind": "all_reduce", "tfl\n')
    with pytest.raises(ConfigError, match=r"^project.calibrate: .*rows is damaged \(rows.jsonl: .*\): corrupt file$"):
        read_measured(run)
    run = write_run(tmp_path / "manifest", collective_rows("all_reduce", 1e-5, 1.0)[:2])
    (run / "manifest.json").write_text('{"run_id": "x", "task": ')
    with pytest.raises(ConfigError, match=r"is damaged \(manifest.json is not JSON.*\): corrupt file$"):
        read_measured(run, key="project.check")
    run = write_run(tmp_path / "failed", collective_rows("all_reduce", 1e-5, 1.0)[:2], status="failed", error="boom")
    with pytest.raises(ConfigError, match=r"ended failed \(boom\); calibrate on runs that passed"):
        read_measured(run)
    with pytest.raises(ConfigError, match="has no rows to fit"):
        read_measured(write_run(tmp_path / "empty", []))
    with pytest.raises(ConfigError, match="not a run directory"):
        read_measured(tmp_path / "missing")


def test_load_run_annotates_rows_from_the_manifest(tmp_path: Path) -> None:
    devices = [{"name": "AMD EPYC", "type": "cpu", "host": h, "threads_used": 2} for h in "ab"]
    run = write_run(tmp_path / "run", collective_rows("all_gather", 1e-4, 1.5), devices=devices, hosts=["a", "b"])
    measured = read_measured(run)
    assert measured.world_size == 2 and measured.name == "run"
    rows = list(measured.rows)
    assert rows[0]["device_name"] == "AMD EPYC" and rows[0]["nodes"] == 2 and rows[0]["threads_used"] == 2
    calibration = calibrate(rows, device="AMD EPYC")
    fit = calibration.collectives[("all_gather", "inter")]
    assert fit.beta_gbps == pytest.approx(1.5, rel=1e-6)
    (row,) = calibration.to_rows()
    assert row["kind"] == "calibration" and row["item"] == "all_gather/inter" and row["rms_error"] < 1e-9


def test_a_cpu_is_projected_from_calibration_alone() -> None:
    rows = collective_rows("all_reduce", 30e-6, 1.8) + [
        {"bench": "gemm", "dtype": "float32", "m": m, "n": m, "k": m, "tflops": 0.05 + 0.0001 * m} for m in (64, 512)
    ]
    device = device_from_calibration(calibrate(rows), ranks_per_node=2)
    assert device.peak("float32") is None and device.gemm_ceiling_tflops("float32") == pytest.approx(0.1012)
    small = ModelShape(vocab_size=8192, dim=384, n_layers=6, n_heads=6, n_kv_heads=2, ffn_dim=1024)
    work = Workload(seq_len=256, global_batch=8, dtype="float32")
    one = estimate_step(small, Layout().resolve(1, global_batch=8), work, device)
    two = estimate_step(small, Layout(dp_replicate=2, dp_shard=1).resolve(2, global_batch=8), work, device)
    assert one.mfu is None and two.dp_comm_exposed_s > 0 and two.step_time_s < one.step_time_s
    with pytest.raises(ConfigError, match="needs gemm calibration rows"):
        device_from_calibration(calibrate(collective_rows("all_reduce", 30e-6, 1.8)))


def test_a_train_run_is_timed_by_its_summary_over_every_step(tmp_path: Path) -> None:
    # With train.log_every=5 the recorded rows are every 5th step; the summary's median covers all.
    config = {"model": {"vocab_size": 256, "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ffn_dim": 128},
              "train": {"seq_len": 32, "micro_batch": 2}, "engine": {"name": "ddp"}}  # fmt: skip
    rows = [{"kind": "train", "step": s, "step_time_s": 0.9, "warmup": False, "passed": True} for s in (5, 10)]
    summary = {"kind": "train_summary", "step_time_s": 0.25, "passed": True}
    case = train_case(read_measured(write_run(tmp_path / "summary", [*rows, summary], task="train", config=config)))
    assert case.measured_s == 0.25
    older = train_case(read_measured(write_run(tmp_path / "rows", rows, task="train", config=config)))
    assert older.measured_s == 0.9  # a run recorded without a summary: its rows
