"""What `harness project` rows are, for comparing runs (harness results compare/regress/trend)."""

from __future__ import annotations

from harness.results.kinds import Metric, RowKind

KINDS = (
    RowKind("projection", ("model", "hardware", "dtype", "gpus_requested", "seq_len", "global_batch", "micro_batch"),
            (Metric("aggregate_pflops", "PFLOP/s"), Metric("tflops_per_device", "TFLOP/s"), Metric("mfu", ""),
             Metric("tokens_per_s", "tokens/s"), Metric("step_time_s", "s", higher_is_better=False)),
            headline="aggregate_pflops"),
    RowKind("calibration", ("item",), (Metric("rms_error", "", higher_is_better=False),
                                       Metric("max_abs_error", "", higher_is_better=False)), headline="rms_error"),
    RowKind("prediction", ("of", "run", "bytes", "group_size", "in_place", "m", "n", "k", "dtype", "engine"),
            (Metric("abs_error", "", higher_is_better=False),), headline="abs_error"),
)  # fmt: skip
"""A projected point per GPU count, a fitted calibration item, a prediction of a held-out measurement."""
