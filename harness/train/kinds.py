"""What training rows are, for comparing runs (harness results compare/regress/trend).

Every training row carries its parallel layout, and the layout is part of its identity, so that
compare and regress never match a TP 2 run's steps with a data-parallel run's."""

from __future__ import annotations

from harness.results.kinds import Metric, RowKind

LAYOUT = ("tp", "pp", "cp", "dp_shard", "dp_replicate", "pp_schedule")
"""The layout fields of a row's identity (harness.perf.layout.Layout.to_row)."""

KINDS = (
    RowKind("train", ("step", *LAYOUT), (Metric("loss", "nats", higher_is_better=False),
                                         Metric("tokens_per_s", "tokens/s"),
                                         Metric("step_time_s", "s", higher_is_better=False), Metric("mfu", "")),
            headline="tokens_per_s"),
    RowKind("train_summary", LAYOUT, (Metric("tokens_per_s", "tokens/s"),
                                      Metric("tokens_per_s_per_device", "tokens/s"),
                                      Metric("tflops_per_device", "TFLOP/s"), Metric("mfu", ""),
                                      Metric("step_time_s", "s", higher_is_better=False),
                                      Metric("final_loss", "nats", higher_is_better=False)), headline="tokens_per_s"),
    RowKind("train_plan", LAYOUT, (Metric("memory_per_device_bytes", "B", higher_is_better=False),
                                   Metric("estimated_step_time_s", "s", higher_is_better=False),
                                   Metric("estimated_mfu", "")), headline="memory_per_device_bytes"),
    RowKind("train_plan_layout", (*LAYOUT, "pp_virtual_stages", "activation_checkpointing"),
            (Metric("estimated_step_time_s", "s", higher_is_better=False), Metric("estimated_mfu", ""),
             Metric("memory_per_device_bytes", "B", higher_is_better=False)), headline="estimated_step_time_s"),
)  # fmt: skip
"""Training step rows, the run's summary row, the dry run's plan row and the layouts
train.plan=auto ranked."""
