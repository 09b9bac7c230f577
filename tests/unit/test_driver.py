"""The driver and the plug-ins in this process, on a one-rank gloo group: checks that catch
corruption, figures from the unit formulas, per-dtype tolerances, telemetry beside each row."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from harness import telemetry, units
from harness.bench import gemm
from harness.bench.base import PlanEnv
from harness.bench.driver import Fault, Telemetry, plan_suite, run_suite
from harness.dist import DistContext, LaunchEnv, free_port, split
from tests.helpers import bench_spec

SPEC = bench_spec(dtypes=None, warmup=1, iters=3, min_bytes=4, max_bytes=4096, step_factor=8,
                  shapes=((33, 17, 65), (64, 64, 64)), array_bytes=2**16, hpl_n=(64, 97))  # fmt: skip


def env(world: int = 1) -> PlanEnv:
    return PlanEnv("cpu", 2**33, world_size=world)


@pytest.fixture(scope="module")
def ctx() -> Iterator[DistContext]:
    store = dist.TCPStore("127.0.0.1", free_port(), 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield DistContext(LaunchEnv("local", 0, 1, 0, 1), torch.device("cpu"), "gloo")
    dist.destroy_process_group()


def test_suite_rows(ctx: DistContext) -> None:
    plan = plan_suite(["gemm", "all_reduce", "memory", "hpl"], SPEC, env())
    seen = []
    result = run_suite(plan, ctx, on_progress=lambda done, total, bench, rows: seen.append((done, total)))
    assert result.failed == 0
    assert seen[-1] == (plan.total, plan.total)
    gemm_rows = result.rows["gemm"]
    assert {r["dtype"] for r in gemm_rows} == {"float32", "bfloat16", "float64"}
    for row in gemm_rows:
        assert row["tflops"] == pytest.approx(units.tflops(2 * row["m"] * row["n"] * row["k"], row["time_us"] * 1e-6))
        assert row["time_us_min"] <= row["time_us"] <= row["time_us_max"]
        assert row["efficiency"] is None  # no datasheet peak for a CPU: no guess
    assert [r["bytes"] for r in result.rows["all_reduce"]] == [4, 4, 32, 32, 256, 256, 2048, 2048]  # 4·8^i <= 4096
    assert all(r["busbw_gbps"] == 0.0 for r in result.rows["all_reduce"])  # 2(n-1)/n = 0 on one rank
    memory = {r["kernel"]: r for r in result.rows["memory"]}
    assert memory["triad"]["bytes"] == 3 * 2**16 and memory["copy"]["bytes"] == 2 * 2**16
    assert memory["copy"]["gbps"] == pytest.approx(2 * 2**16 / (memory["copy"]["time_us"] * 1e-6) / 1e9)
    hpl = result.rows["hpl"]
    assert [r["n"] for r in hpl] == [64, 97] and all(r["residual"] < 16 for r in hpl)
    assert hpl[1]["gflops"] == pytest.approx(units.hpl_flops(97) / (hpl[1]["time_us"] * 1e-6) / 1e9)


@pytest.mark.parametrize("name", ["gemm", "all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce",
                                  "all_to_all", "memory", "hpl"])  # fmt: skip
def test_planted_wrong_element_is_caught(ctx: DistContext, name: str) -> None:
    plan = plan_suite([name], SPEC, env())
    result = run_suite(plan, ctx, fault=Fault("wrong_result", 0))
    rows = result.rows[name]
    assert result.failed == 1 and rows[0]["passed"] is False
    if "wrong" in rows[0]:
        assert rows[0]["wrong"] == 1
    assert all(r["passed"] for r in rows[1:])


def test_injected_exception(ctx: DistContext) -> None:
    with pytest.raises(RuntimeError, match="injected fault"):
        run_suite(plan_suite(["gemm"], SPEC, env()), ctx, fault=Fault("raise", 0))


def test_gemm_tolerances_hold_for_honest_products(ctx: DistContext) -> None:
    comm = split(ctx, 1)
    for dtype in ("float64", "float32", "bfloat16", "float16"):
        case = gemm.BENCHMARK.build(gemm.GemmCase(dtype, 128, 96, 2048), ctx, SPEC, comm)
        case.run()
        check = case.verify()
        assert check["passed"], (dtype, check)
        assert check["rel_error"] < gemm.TOLERANCE[dtype] / 3  # margin: the tolerance is not tuned to pass


def test_rows_carry_telemetry(ctx: DistContext) -> None:
    source, note = telemetry.make_source("cpu")
    assert note is None
    result = run_suite(plan_suite(["gemm"], SPEC, env()), ctx, tele=Telemetry(source, 0.01))
    row = result.rows["gemm"][0]
    assert row["telemetry_samples"] >= 2 and row["load_1m_max"] >= 0
    assert {r["host"] for r in result.rows["gemm"]} == {socket.gethostname()}


def test_gemm_summary_is_mamf_median_geomean() -> None:
    rows = [{"dtype": "bfloat16", "shape": s, "tflops": t, "peak_tflops": 989.0}
            for s, t in (("a", 400.0), ("b", 800.0), ("c", 100.0), ("b", 790.0))]  # fmt: skip
    summary = gemm.BENCHMARK.summary(rows)["bfloat16"]
    # per shape the slowest rank: a 400, b 790, c 100
    assert summary["best_tflops"] == 790.0 and summary["best_shape"] == "b"
    assert summary["median_tflops"] == 400.0
    assert summary["geomean_tflops"] == pytest.approx((400 * 790 * 100) ** (1 / 3))
    assert summary["best_efficiency"] == pytest.approx(790 / 989)
