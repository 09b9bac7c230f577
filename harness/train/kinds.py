"""What training rows are, for comparing runs (harness results compare/regress/trend)."""

from __future__ import annotations

from harness.results.kinds import Metric, RowKind

KINDS = (
    RowKind("train", ("step",), (Metric("loss", "nats", higher_is_better=False), Metric("tokens_per_s", "tokens/s"),
                                 Metric("step_time_s", "s", higher_is_better=False), Metric("mfu", "")),
            headline="tokens_per_s"),
    RowKind("train_summary", (), (Metric("tokens_per_s", "tokens/s"), Metric("tokens_per_s_per_device", "tokens/s"),
                                  Metric("tflops_per_device", "TFLOP/s"), Metric("mfu", ""),
                                  Metric("step_time_s", "s", higher_is_better=False),
                                  Metric("final_loss", "nats", higher_is_better=False)), headline="tokens_per_s"),
    RowKind("train_plan", (), (Metric("memory_per_device_bytes", "B", higher_is_better=False),),
            headline="memory_per_device_bytes"),
)  # fmt: skip
"""Training step rows, the run's summary row and the dry run's plan row."""
