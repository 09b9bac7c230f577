"""`harness results compare`: rows matched by identity, ratios against the first run, noise, the plot."""

from __future__ import annotations

import struct
from datetime import timedelta
from pathlib import Path

import pytest

from harness.catalog import compare
from harness.catalog.plots import size_ticks
from harness.catalog.text import size_label
from harness.errors import ConfigError
from tests.unit.test_catalog_helpers import (
    KINDS,
    T0,
    all_reduce_rows,
    copy_v1,
    gemm_rows,
    record_run,
    write_run,
)

HOUR = timedelta(hours=1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def verdicts(comparison, metric: str, i: int = 1) -> set[str]:
    return {m.verdict(i) for m in comparison.metrics if m.metric == metric}


def test_v1_runs_compare_with_each_other(results_dir: Path) -> None:
    first = copy_v1(results_dir)
    second = copy_v1(results_dir, "20261128T041045Z-bench-0a0b0c")
    comparison = compare([first, second], KINDS)
    assert comparison.run_ids == (first.name, second.name)
    # 12 gemm identities x 1 metric + 4 all_reduce identities x 3 metrics
    assert len(comparison.metrics) == 12 + 4 * 3 and comparison.matched == (16, 16)
    assert all(m.ratio(1) == 1.0 and m.verdict(1) == "same" for m in comparison.metrics)
    lines = comparison.table().splitlines()
    assert len(lines) == 2 + 24 and "same (±" in lines[2]
    width, height = png_size(comparison.plot())
    assert width >= 800 and height >= 600


def test_a_v1_run_compares_with_a_v3_run(results_dir: Path) -> None:
    """v1 rows say `bench` and lack `group`; v3 rows say `kind`: rows of the same identity still match."""
    v1 = copy_v1(results_dir)
    rows = [{**r, "kind": r.pop("bench")} for r in _v1_rows(v1) if r["bench"] == "gemm"]
    for r in rows:
        r["tflops"] *= 0.5
    v3 = write_run(results_dir, rows, started=T0 + 2 * HOUR)
    comparison = compare([v1, v3], KINDS)
    assert comparison.matched == (16, 12)
    assert verdicts(comparison, "tflops") == {"worse"}
    assert all(m.ratio(1) == pytest.approx(0.5) for m in comparison.metrics if m.values[1] is not None)


def _v1_rows(path: Path) -> list[dict]:
    from harness.results.read import read_rows

    return read_rows(path)


def test_changes_count_only_beyond_the_noise(results_dir: Path) -> None:
    base = write_run(results_dir, gemm_rows(1.0, noise=0.01))
    faster = write_run(results_dir, gemm_rows(1.10, noise=0.01), started=T0 + HOUR)
    slightly = write_run(results_dir, gemm_rows(1.01, noise=0.01), started=T0 + 2 * HOUR)
    noisy_slower = write_run(results_dir, gemm_rows(0.90, noise=0.15), started=T0 + 3 * HOUR)
    comparison = compare([base, faster, slightly, noisy_slower], KINDS)
    assert verdicts(comparison, "tflops", 1) == {"better"}
    assert verdicts(comparison, "tflops", 2) == {"same"}  # 1 % is inside the 2 % floor
    assert verdicts(comparison, "tflops", 3) == {"same"}  # 10 % is inside the 15 % these runs show
    m = comparison.metrics[0]
    assert m.threshold(1) == pytest.approx(0.02) and m.threshold(3) == pytest.approx(0.15)
    header = comparison.table().splitlines()[0].split()
    assert header.count("ratio") == 3 and header.count("verdict") == 3


def test_lower_is_better_metrics_turn_the_verdict(results_dir: Path) -> None:
    base = write_run(results_dir, all_reduce_rows(1.0))
    slower = write_run(results_dir, all_reduce_rows(0.8), started=T0 + HOUR)
    comparison = compare([base, slower], KINDS)
    assert verdicts(comparison, "busbw_gbps") == {"worse"}
    assert verdicts(comparison, "time_us") == {"worse"}  # more time is worse
    time_us = next(m for m in comparison.metrics if m.metric == "time_us")
    assert time_us.ratio(1) == pytest.approx(1.25) and time_us.worse_by(1) == pytest.approx(0.25)


def test_rows_that_failed_their_check_do_not_count(results_dir: Path) -> None:
    base = write_run(results_dir, gemm_rows())
    rows = gemm_rows(0.5)
    for r in rows:
        r["passed"] = r["rank"] == 1  # rank 0's rows failed
    other = write_run(results_dir, rows, started=T0 + HOUR)
    comparison = compare([base, other], KINDS)
    assert comparison.matched == (8, 4)
    assert {dict(m.subject)["rank"] for m in comparison.metrics} == {1}  # rank 0 is matched nowhere
    assert verdicts(comparison, "tflops") == {"worse"}


def test_runs_that_share_no_identity_are_one_config_error(results_dir: Path) -> None:
    gemm = write_run(results_dir, gemm_rows())
    collective = write_run(results_dir, all_reduce_rows(), started=T0 + HOUR)
    with pytest.raises(ConfigError) as err:
        compare([gemm, collective], KINDS)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("runs share no row identity:") and "8 gemm" in str(err.value)
    with pytest.raises(ConfigError, match="at least two runs"):
        compare([gemm], KINDS)
    with pytest.raises(ConfigError, match="not a run directory"):
        compare([gemm, results_dir / "nowhere"], KINDS)


def test_runs_of_the_real_writer_compare(results_dir: Path) -> None:
    base = record_run(results_dir, [*gemm_rows(), *all_reduce_rows()])
    rerun = record_run(results_dir, [*gemm_rows(1.005), *all_reduce_rows(0.995)])
    comparison = compare([base, rerun], KINDS)
    assert comparison.matched == (14, 14)
    assert {m.verdict(1) for m in comparison.metrics} == {"same"}
    png_size(comparison.plot())


def test_size_axis_ticks_read_as_binary_sizes() -> None:
    assert [size_label(t) for t in size_ticks(4, 8 << 30)] == ["32", "1K", "32K", "1M", "32M", "1G"]
    assert [size_label(t) for t in size_ticks(1024, 64 << 20)] == ["1K", "4K", "16K", "64K", "256K", "1M", "4M",
                                                                    "16M", "64M"]  # fmt: skip
    assert size_label(3 << 30) == "3G" and size_label(1000) == "1000"
