"""Memory per device (harness.perf.memory): the checks of issue 14 and the terms by hand."""

from __future__ import annotations

import pytest

from harness.perf.layout import Layout
from harness.perf.memory import (
    CHECKPOINT_BYTES_PER_PARAM,
    GIB,
    activation_bytes_per_layer,
    in_flight_microbatches,
    layout_memory,
    memory_plan,
)
from harness.perf.shape import ModelShape, param_count
from harness.perf.workload import Workload

L405 = ModelShape(vocab_size=128256, dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, ffn_dim=53248)
SEQ, BATCH = 8192, 2048


def test_plain_fsdp_without_recompute_does_not_fit() -> None:
    report = layout_memory(L405, Layout().resolve(2048, global_batch=BATCH), Workload(SEQ, BATCH), memory_gib=80)
    assert report.fits is False
    assert report.largest_terms[0][0] == "activations"
    assert report.activations_bytes == 126 * 34 * SEQ * 16384  # one micro-batch, all layers
    assert report.advice and report.advice[0].startswith("turn on train.activation_checkpointing")


def test_tp8_pp16_with_checkpointing_fits_on_16384_gpus() -> None:
    layout = Layout(tp=8, pp=16).resolve(16384, global_batch=BATCH)
    report = layout_memory(L405, layout, Workload(SEQ, BATCH, activation_checkpointing=True), memory_gib=80)
    assert report.fits is True and report.advice == ()
    assert report.device_capacity_bytes == 80 * GIB and report.usable_bytes == int(0.9 * 80 * GIB)
    assert report.total_bytes <= report.usable_bytes
    terms = [b for _, b in report.largest_terms]
    assert terms == sorted(terms, reverse=True)


def test_the_old_zero3_plan_says_it_does_not_fit() -> None:
    plan = memory_plan(L405, dtype="bfloat16", zero_stage=3, dp_size=16384, micro_batch=1, seq_len=SEQ, memory_gib=80)
    assert plan.fits is False and plan.total > 500 * GIB
    assert memory_plan(L405, dtype="bf16", zero_stage=3, dp_size=16384, micro_batch=1, seq_len=SEQ).total == plan.total
    assert memory_plan(L405, dtype="bfloat16", zero_stage=3, dp_size=16384, micro_batch=1, seq_len=SEQ).fits is None


def test_activation_terms_by_hand() -> None:
    sbh = 8192 * 16384
    assert activation_bytes_per_layer(L405, seq_len=8192, micro_batch=1) == 34 * sbh
    assert activation_bytes_per_layer(L405, seq_len=8192, micro_batch=1, flash_attention=False) == pytest.approx(
        sbh * (34 + 5 * 128 * 8192 / 16384)
    )
    assert activation_bytes_per_layer(L405, seq_len=8192, micro_batch=1, tp=8, sequence_parallel=True) == 34 * sbh / 8
    assert activation_bytes_per_layer(L405, seq_len=8192, micro_batch=1, tp=8) == pytest.approx(sbh * (10 + 24 / 8))
    assert activation_bytes_per_layer(L405, seq_len=8192, micro_batch=1, tp=8, cp=2, sequence_parallel=True,
                                      recompute=True) == 2 * sbh / 8 / 2  # fmt: skip
    assert activation_bytes_per_layer(L405, seq_len=8192, micro_batch=1, dtype="float32") == 68 * sbh


def test_microbatches_in_flight() -> None:
    one_f = Layout(tp=8, pp=16).resolve(8192, global_batch=BATCH)
    assert in_flight_microbatches(one_f, 0) == 16 and in_flight_microbatches(one_f, 15) == 1
    gpipe = Layout(tp=8, pp=16, pp_schedule="gpipe").resolve(8192, global_batch=BATCH)
    assert in_flight_microbatches(gpipe, 0) == 32
    inter = Layout(tp=8, pp=16, pp_schedule="interleaved_1f1b", pp_virtual_stages=4).resolve(8192, global_batch=BATCH)
    assert in_flight_microbatches(inter, 0) == pytest.approx(16 * (1 + 15 / 64))


def test_checkpoint_and_logits() -> None:
    layout = Layout(tp=8, pp=16).resolve(16384, global_batch=BATCH)
    report = layout_memory(L405, layout, Workload(SEQ, BATCH, activation_checkpointing=True), memory_gib=80)
    assert report.checkpoint_bytes == CHECKPOINT_BYTES_PER_PARAM * param_count(L405).total
    last = layout_memory(L405, Layout(tp=8, pp=1).resolve(8, global_batch=8), Workload(SEQ, 8), memory_gib=None)
    assert last.logits_bytes == 8192 * 128256 // 8 * 4 * 2 and last.fits is None
    row = report.to_row()
    assert row["memory_per_device_bytes"] == report.total_bytes and row["fits"] is True
