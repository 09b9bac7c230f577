"""The planner and the projection (harness.perf.search, project, plots)."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.hardware import profiles
from harness.perf.device import device_from_profile
from harness.perf.layout import Layout, divisors
from harness.perf.plots import breakdown_png, gpu_label, sustained_png
from harness.perf.project import parse_gpu_counts, project, summary_line
from harness.perf.search import candidate_layouts, plan_layouts, usable_gpu_counts
from harness.perf.shape import ModelShape
from harness.perf.workload import Workload

L405 = ModelShape(vocab_size=128256, dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, ffn_dim=53248)
L8 = ModelShape(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336)
B200 = device_from_profile(profiles()["b200"])
H100 = device_from_profile(profiles()["h100-sxm"])
WORK = Workload(seq_len=8192, global_batch=2048)
ROW_KEYS = {
    "gpus", "gpus_idle", "tp", "pp", "cp", "dp_shard", "dp_replicate", "pp_schedule", "pp_virtual_stages",
    "pp_microbatches", "step_time_s", "tokens_per_s", "tflops_per_device", "hw_tflops_per_device", "mfu", "hfu",
    "aggregate_pflops", "dtype", "compute_s", "tp_comm_s", "cp_comm_s", "pp_bubble_s", "pp_p2p_s",
    "dp_comm_exposed_s", "memory_per_device_bytes", "fits",
}  # fmt: skip


def test_parse_gpu_counts() -> None:
    assert parse_gpu_counts("8..16384x2") == [8 * 2**i for i in range(12)]
    assert parse_gpu_counts("8..100x2") == [8, 16, 32, 64]
    assert parse_gpu_counts("1024, 10000") == [1024, 10000] == parse_gpu_counts([1024, "10000"])
    assert parse_gpu_counts(10000) == [10000] and parse_gpu_counts("[8,64]") == [8, 64]
    for bad in ("8..16384", "16..8x2", "8..64x1", "0", "abc", "", True):
        with pytest.raises(ConfigError, match=r"cluster\.gpus"):
            parse_gpu_counts(bad)


def test_a_count_no_layout_fills_is_projected_lower_with_idle_gpus() -> None:
    (row,) = project(L405, B200, WORK, [10000], layout=Layout(tp=8, pp=16), model="llama3-405b")
    assert set(row) >= ROW_KEYS
    assert (row["gpus"], row["gpus_idle"], row["dp_shard"], row["pp_microbatches"]) == (8192, 1808, 64, 32)
    assert row["aggregate_pflops"] == pytest.approx(row["tflops_per_device"] * 8192 / 1e3)
    line = summary_line(row)
    assert line.startswith("10,000 × b200, bf16: ") and "of 22.5 EF peak (" in line and "1,808 idle" in line


def test_a_fully_given_layout_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"= 8,192 ≠ world size 10,000"):
        project(L405, B200, WORK, [10000], layout=Layout(tp=8, pp=16, dp_shard=64))


def test_the_planner_ranks_layouts_that_fit() -> None:
    plans = plan_layouts(L405, H100, WORK, gpus=16384, top=5)
    assert 1 <= len(plans) <= 5 and all(p.fits for p in plans)
    times = [p.estimate.step_time_s for p in plans]
    assert times == sorted(times)
    assert all(p.layout.tp <= 8 and p.layout.world_size == 16384 for p in plans)
    candidates = candidate_layouts(L405, gpus=16384, gpus_per_node=8, workload=WORK)
    assert any(c.pp_schedule == "interleaved_1f1b" for c in candidates) and any(c.cp == 2 for c in candidates)


def test_planner_turns_on_recompute_only_when_needed() -> None:
    (best,) = plan_layouts(L8, H100, Workload(seq_len=8192, global_batch=64), gpus=8, top=1)
    assert best.fits
    (forced,) = plan_layouts(L8, H100, Workload(seq_len=8192, global_batch=64), gpus=8, top=1,
                             activation_checkpointing=True)  # fmt: skip
    assert forced.workload.activation_checkpointing and forced.estimate.step_time_s >= best.estimate.step_time_s


def test_projection_without_a_layout_uses_the_planner() -> None:
    rows = project(L8, H100, Workload(seq_len=8192, global_batch=512), "8..64x2", model="llama3-8b")
    assert [r["gpus"] for r in rows] == [8, 16, 32, 64] and all(r["fits"] for r in rows)
    assert all(r["gpus_idle"] == 0 for r in rows)


def test_usable_counts() -> None:
    counts = usable_gpu_counts(L405, limit=10000, gpus_per_node=8, workload=WORK)
    assert counts[0] == 9216  # 9 or 18 stages (126 = 9 × 14) × powers of two
    fixed = usable_gpu_counts(L405, limit=10000, gpus_per_node=8, workload=WORK, layout=Layout(tp=8, pp=16))
    assert fixed[0] == 8192
    assert divisors(12) == [1, 2, 3, 4, 6, 12] and divisors(1) == [1] and len(divisors(2**24)) == 25
    # A global batch mistaken for tokens (2**40): the divisors, not a loop over a trillion candidates.
    huge = usable_gpu_counts(L405, limit=10000, gpus_per_node=8, workload=Workload(seq_len=8192, global_batch=2**40))
    assert huge[0] == 9216  # as with 2,048 sequences: every power of two divides it


def test_plots_are_png() -> None:
    rows = project(L8, H100, Workload(seq_len=8192, global_batch=512), [8, 64], model="llama3-8b")
    for png in (sustained_png(rows), breakdown_png(rows)):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert [gpu_label(n) for n in (8, 512, 4096, 16384, 10000)] == ["8", "512", "4K", "16K", "10,000"]


def test_a_layout_that_no_count_can_use_is_refused_with_its_rule() -> None:
    with pytest.raises(ConfigError, match=r"parallel.tp=3 does not divide model.n_heads=128"):
        project(L405, B200, WORK, [3072], layout=Layout(tp=3))
    (row,) = project(L405, B200, WORK, [12288], layout=Layout(tp=8, pp=16))  # dp 96 does not divide 2,048
    assert (row["gpus"], row["gpus_idle"]) == (8192, 4096)
