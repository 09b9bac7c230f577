"""The driver and the two plug-ins in this process, on a one-rank gloo group: checks that catch
corruption, figures from the unit formulas, per-dtype tolerances."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from harness import units
from harness.bench import all_reduce, gemm
from harness.bench.base import BenchSpec
from harness.bench.driver import Fault, plan_suite, run_suite
from harness.dist import DistContext, LaunchEnv, free_port

SPEC = BenchSpec(dtypes=None, warmup=1, iters=3, min_bytes=4, max_bytes=4096, step_factor=8,
                 shapes=((33, 17, 65), (64, 64, 64)))  # fmt: skip


@pytest.fixture(scope="module")
def ctx() -> Iterator[DistContext]:
    store = dist.TCPStore("127.0.0.1", free_port(), 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield DistContext(LaunchEnv("local", 0, 1, 0, 1), torch.device("cpu"), "gloo")
    dist.destroy_process_group()


def test_suite_rows(ctx: DistContext) -> None:
    plan = plan_suite(["gemm", "all_reduce"], SPEC, "cpu", 2**33)
    seen = []
    result = run_suite(plan, ctx, on_progress=lambda done, total, bench, rows: seen.append((done, total)))
    assert result.failed == 0
    assert seen[-1] == (plan.total, plan.total)
    gemm_rows = result.rows["gemm"]
    assert {r["dtype"] for r in gemm_rows} == {"float32", "bfloat16", "float64"}
    for row in gemm_rows:
        assert row["tflops"] == pytest.approx(units.tflops(2 * row["m"] * row["n"] * row["k"], row["time_us"] * 1e-6))
        assert row["time_us_min"] <= row["time_us"] <= row["time_us_max"]
    assert [r["bytes"] for r in result.rows["all_reduce"]] == [4, 4, 32, 32, 256, 256, 2048, 2048]  # 4·8^i <= 4096
    assert all(r["busbw_gbps"] == 0.0 for r in result.rows["all_reduce"])  # 2(n-1)/n = 0 on one rank


@pytest.mark.parametrize("name", ["gemm", "all_reduce"])
def test_corruption_is_caught(ctx: DistContext, name: str) -> None:
    plan = plan_suite([name], SPEC, "cpu", 2**33)
    result = run_suite(plan, ctx, fault=Fault("wrong_result", 0))
    rows = result.rows[name]
    assert result.failed == 1 and rows[0]["passed"] is False
    assert all(r["passed"] for r in rows[1:])


def test_injected_exception(ctx: DistContext) -> None:
    with pytest.raises(RuntimeError, match="injected fault"):
        run_suite(plan_suite(["gemm"], SPEC, "cpu", 2**33), ctx, fault=Fault("raise", 0))


def test_all_reduce_expected_data_is_exact_at_any_world_size() -> None:
    for world in (1, 2, 3, 4, 7, 1000, 10_001):
        inputs = torch.stack([all_reduce.pattern(30, r, torch.float64, torch.device("cpu")) for r in range(world)])
        expected = all_reduce.expected_sum(world)
        assert inputs.sum(0).tolist() == [expected[i % 3] for i in range(30)]
        assert all(abs(v) <= 1 for v in expected)  # exact in every dtype
    # partial sums of consecutive ranks stay within [-1, 1]: exact in bf16 whatever the order of a ring
    data = torch.stack([all_reduce.pattern(3, r, torch.float64, torch.device("cpu")) for r in range(50)])
    assert data.cumsum(0).abs().max() <= 1


def test_gemm_tolerances_hold_for_honest_products(ctx: DistContext) -> None:
    spec = BenchSpec(dtypes=None, warmup=0, iters=1, min_bytes=1, max_bytes=1, step_factor=2,
                     shapes=((128, 96, 2048),))  # fmt: skip
    for dtype in ("float64", "float32", "bfloat16", "float16"):
        case = gemm.BENCHMARK.build({"dtype": dtype, "m": 128, "n": 96, "k": 2048}, ctx, spec)
        case.run()
        check = case.verify()
        assert check["passed"], (dtype, check)
        assert check["rel_error"] < gemm.TOLERANCE[dtype] / 3  # margin: the tolerance is not tuned to pass


def test_host_is_recorded(ctx: DistContext) -> None:
    result = run_suite(plan_suite(["gemm"], SPEC, "cpu", 2**33), ctx)
    assert {r["host"] for r in result.rows["gemm"]} == {socket.gethostname()}
