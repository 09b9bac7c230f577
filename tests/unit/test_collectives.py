"""Byte counts, rounding, bus factors and expected data of every collective, against values
computed by hand for n = 2, 3, 4 and 8 ranks."""

from __future__ import annotations

import pytest
import torch

from harness import units
from harness.bench.base import BenchSpec, PlanEnv
from harness.bench.collectives.base import count_wrong, pattern, reduced
from harness.bench.driver import plan_suite
from harness.bench.registry import get
from harness.errors import ConfigError
from tests.helpers import bench_spec


def spec(**kw: object) -> BenchSpec:
    base = dict(dtypes=("float32",), warmup=0, iters=1, min_bytes=1000, max_bytes=1000, step_factor=2)
    return bench_spec(**{**base, **kw})


def cases(name: str, n: int, **kw: object) -> list:
    return get(name).plan(spec(**kw), spec(**kw).dtypes, PlanEnv("cpu", 2**33, world_size=n))


# (op, n) -> bytes S that 1000 requested bytes of float32 become (count a multiple of n for the
# ops that split the buffer per rank), and busbw/algbw.
@pytest.mark.parametrize(
    ("op", "n", "nbytes", "factor"),
    [
        ("all_reduce", 2, 1000, 1.0), ("all_reduce", 3, 1000, 4 / 3), ("all_reduce", 4, 1000, 1.5),
        ("all_reduce", 8, 1000, 1.75),
        ("all_gather", 2, 1000, 0.5), ("all_gather", 3, 996, 2 / 3), ("all_gather", 4, 992, 0.75),
        ("all_gather", 8, 992, 0.875),
        ("reduce_scatter", 3, 996, 2 / 3), ("reduce_scatter", 8, 992, 0.875),
        ("all_to_all", 3, 996, 2 / 3), ("all_to_all", 4, 992, 0.75),
        ("broadcast", 3, 1000, 1.0), ("reduce", 8, 1000, 1.0), ("sendrecv", 4, 1000, 1.0),
    ],
)  # fmt: skip
def test_byte_counts_and_bus_factors(op: str, n: int, nbytes: int, factor: float) -> None:
    planned = cases(op, n)
    assert {c.bytes for c in planned} == {nbytes}
    assert all(c.count == nbytes // 4 for c in planned)
    assert units.bus_factor(op, n) == pytest.approx(factor)
    # 996 B in 1 ms: algbw 0.000996 GB/s, busbw x factor
    assert units.busbw_gbps(op, nbytes, 1e-3, n) == pytest.approx(nbytes / 1e-3 / 1e9 * factor)


def test_rounding_is_noted() -> None:
    env = PlanEnv("cpu", 2**33, world_size=3)
    get("all_gather").plan(spec(), ("float32",), env)
    assert env.notes == ["all_gather: 1000 B rounded down to 996 B (a multiple of 3 rank(s) x 4 B float32)"]


def test_modes_per_op() -> None:
    assert {c.in_place for c in cases("all_gather", 2)} == {False, True}
    assert {c.in_place for c in cases("all_to_all", 2)} == {False}  # torch: out of place only
    assert {c.in_place for c in cases("all_reduce", 2, in_place=True)} == {True}
    assert cases("sendrecv", 1) == []  # a ring needs two ranks


def test_redops_and_roots() -> None:
    planned = cases("reduce", 4, redops=("sum", "max"), root=3)
    assert {(c.redop, c.root) for c in planned} == {("sum", 3), ("max", 3)}
    assert {c.redop for c in cases("broadcast", 4, redops=("max",))} == {None}
    with pytest.raises(ConfigError, match=r"bench\.root=4 but a group has 4 ranks"):
        cases("broadcast", 4, root=4)
    with pytest.raises(ConfigError, match="avg is not defined for int32"):
        cases("all_reduce", 2, dtypes=("int32",), redops=("avg",))


def test_groups_must_divide_the_world() -> None:
    with pytest.raises(ConfigError, match=r"bench\.groups=3 does not divide the world size 4; choose one of 1, 2, 4"):
        plan_suite(["all_reduce"], spec(groups=3), PlanEnv("cpu", 2**33, world_size=4))
    planned = plan_suite(["all_gather"], spec(groups=2), PlanEnv("cpu", 2**33, world_size=6))
    assert {c.bytes for c in planned.items[0][1]} == {996}  # a multiple of the group size 3


def test_sweep_that_does_not_fit_is_refused() -> None:
    needs = r"max_bytes=1G \(1,073,741,824 bytes\): all_reduce needs 3.0 GiB on each device but 1.0 GiB is free"
    with pytest.raises(ConfigError, match=needs):
        plan_suite(["all_reduce"], spec(max_bytes=2**30), PlanEnv("cpu", 2**30, world_size=2))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 1000, 10_001])
def test_expected_reductions_are_exact(n: int) -> None:
    data = torch.stack([pattern(9, r, torch.float64, torch.device("cpu")) for r in range(n)])
    for redop, torch_fn in (("sum", lambda t: t.sum(0)), ("max", lambda t: t.max(0).values),
                            ("min", lambda t: t.min(0).values), ("prod", lambda t: t.prod(0)),
                            ("avg", lambda t: t.mean(0))):  # fmt: skip
        expected = reduced(redop, n)
        assert torch.allclose(torch_fn(data), torch.tensor([expected[i % 3] for i in range(9)], dtype=torch.float64))
    # any run of consecutive ranks sums to -1, 0 or 1: exact in bf16 whatever the order of a ring
    assert data.cumsum(0).abs().max() <= 1


def test_count_wrong_counts_planted_errors() -> None:
    good = pattern(12, 2, torch.bfloat16, torch.device("cpu"))
    expected = pattern(12, 2, torch.float64, torch.device("cpu"))
    assert count_wrong(good, expected) == 0
    bad = good.clone()
    bad[5] += 1
    bad[7] = float("nan")
    assert count_wrong(bad, expected) == 2
    residues = reduced("sum", 4)
    out = torch.tensor([residues[(i + 1) % 3] for i in range(10)])
    assert count_wrong(out, residues, offset=1) == 0
    out[3] = 9
    assert count_wrong(out, residues, offset=1) == 1


def test_data_moving_ops_can_tell_ranks_and_offsets_apart() -> None:
    from harness.bench.collectives.base import ident_pattern

    cpu = torch.device("cpu")
    seqs = [ident_pattern(600, r, torch.bfloat16, cpu) for r in range(64)]
    for a in range(64):
        assert seqs[a].abs().max() <= 125  # exact in bf16
        for b in range(a + 1, 64):
            assert not torch.equal(seqs[a], seqs[b]), (a, b)  # a slice from another rank fails the check
    assert not torch.equal(seqs[0][3:], seqs[0][:-3])  # and so does a shifted one


def test_count_wrong_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.bench.collectives import base

    monkeypatch.setattr(base, "CHUNK", 7)
    residues = reduced("sum", 5)
    got = torch.tensor([residues[(i + 2) % 3] for i in range(50)], dtype=torch.float32)
    assert count_wrong(got, residues, offset=2) == 0
    got[0], got[49] = 5, float("nan")
    assert count_wrong(got, residues, offset=2) == 2
    assert count_wrong(got, got.clone().nan_to_num(0)) == 1


def test_float8_needs_shapes_in_multiples_of_16() -> None:
    env = PlanEnv("cuda", 2**40, world_size=1)
    planned = get("gemm").plan(spec(shapes=((97, 61, 83), (128, 64, 32))), ("float8",), env)
    assert [(c.m, c.n, c.k) for c in planned] == [(128, 64, 32)]
    assert env.notes == ["gemm: float8 skips 97x61x83 (k and n must be multiples of 16)"]
    with pytest.raises(ConfigError, match="no shape can run in float8"):
        get("gemm").plan(spec(shapes=((97, 61, 83),)), ("float8",), PlanEnv("cuda", 2**40, world_size=1))
