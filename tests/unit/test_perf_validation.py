"""The projection against Llama 3 405B's published layouts ("The Llama 3 Herd of Models", table 4;
shared/REFERENCE.md §10): H100 80 GB, BF16, micro-batch 1, interleaved 1F1B with 8 virtual stages
(126 layers = 16 stages × 8 chunks − 2 chunks that hold only the embedding and the output head)."""

from __future__ import annotations

import statistics

import pytest

from harness.hardware import profiles
from harness.perf.device import device_from_profile
from harness.perf.layout import Layout
from harness.perf.shape import ModelShape
from harness.perf.step import estimate_step
from harness.perf.workload import Workload

L405 = ModelShape(vocab_size=128256, dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, ffn_dim=53248)
V = 8  # virtual stages: 16 × 8 − 2 = 126
PAPER = [  # gpus, tp, cp, pp, dp, seq, sequences per step, TFLOP/s per GPU
    (8192, 8, 1, 16, 64, 8192, 2048, 430),
    (16384, 8, 1, 16, 128, 8192, 2048, 400),
    (16384, 8, 16, 16, 8, 131072, 128, 380),
]


def projected(gpus: int, tp: int, cp: int, pp: int, dp: int, seq: int, batch: int):
    layout = Layout(tp=tp, cp=cp, pp=pp, dp_shard=dp, pp_schedule="interleaved_1f1b", pp_virtual_stages=V)
    layout = layout.resolve(gpus, global_batch=batch)
    assert layout.pp_microbatches == batch // dp  # 32 at 8K GPUs, 16 at 16K
    return estimate_step(L405, layout, Workload(seq_len=seq, global_batch=batch), device_from_profile(
        profiles()["h100-sxm"]))  # fmt: skip


@pytest.fixture(scope="module")
def errors() -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"causal": [], "non_causal": []}
    for gpus, tp, cp, pp, dp, seq, batch, paper in PAPER:
        est = projected(gpus, tp, cp, pp, dp, seq, batch)
        out["causal"].append(est.tflops_per_device_causal / paper - 1)
        out["non_causal"].append(est.tflops_per_device / paper - 1)
    return out


def test_llama3_rows_within_15_percent_under_the_causal_convention(errors: dict[str, list[float]]) -> None:
    causal = errors["causal"]
    assert all(abs(e) <= 0.15 for e in causal), causal
    assert statistics.median(abs(e) for e in causal) <= 0.10, causal


def test_the_paper_counts_causal_attention(errors: dict[str, list[float]]) -> None:
    # at 131,072 tokens the non-causal count (12·L·H·Q·T) is ~40 % higher: far off the paper's 380
    assert errors["non_causal"][2] > 0.25 > abs(errors["causal"][2])
    assert statistics.median(map(abs, errors["causal"])) < statistics.median(map(abs, errors["non_causal"]))


def test_the_model_keeps_the_papers_ordering() -> None:
    rows = [projected(*row[:7]) for row in PAPER]
    assert rows[0].tflops_per_device_causal > rows[1].tflops_per_device_causal  # more bubble with 16 micro-batches
    assert rows[1].pp_bubble_s / rows[1].step_time_s > rows[0].pp_bubble_s / rows[0].step_time_s
    assert rows[2].cp_comm_s > 0 and rows[0].cp_comm_s == 0
