"""`harness results export`: CSV of rows, Prometheus text of headline figures, MLPerf log lines."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from harness.catalog import export
from harness.catalog.export import escape_label, metric_name
from harness.errors import ConfigError
from tests.unit.test_catalog_helpers import KINDS, T0, all_reduce_rows, copy_v1, gemm_rows, train_rows, write_run

# The text exposition format, line by line (https://prometheus.io/docs/instrumenting/exposition_formats/),
# as node_exporter's textfile collector takes it: no timestamps.
METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
VALUE = r"(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|NaN|[+-]Inf)"
SAMPLE = re.compile(rf"^({METRIC})(?:\{{{LABEL}(?:,{LABEL})*\}})? {VALUE}$")
HELP = re.compile(rf"^# HELP ({METRIC}) (?:[^\\\n]|\\\\|\\n)*$")
TYPE = re.compile(rf"^# TYPE ({METRIC}) (?:counter|gauge|histogram|summary|untyped)$")


def check_exposition(text: str) -> dict[str, list[str]]:
    """Every line matches the grammar; each family has one HELP and one TYPE before its samples, and
    its samples are contiguous; no two samples share name and labels. Returns the samples by family."""
    assert text.endswith("\n")
    families: dict[str, list[str]] = {}
    current = None
    for line in text[:-1].split("\n"):
        if m := HELP.match(line):
            assert m.group(1) not in families, f"second HELP for {m.group(1)}"
            current = m.group(1)
            families[current] = []
        elif m := TYPE.match(line):
            assert m.group(1) == current and not families[current], line
        else:
            m = SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            assert m.group(1) == current, f"{m.group(1)} outside its family"
            families[current].append(line)
    for samples in families.values():
        keys = [s.rsplit(" ", 1)[0] for s in samples]
        assert len(keys) == len(set(keys)), "duplicate series"
    return families


def test_csv_header_names_the_row_fields(results_dir: Path) -> None:
    v1 = copy_v1(results_dir)
    v3 = write_run(results_dir, all_reduce_rows(), started=T0 + timedelta(hours=1))
    text = export([v1, v3], "csv", KINDS)
    table = list(csv.reader(io.StringIO(text)))
    header = table[0]
    assert header[:2] == ["run_id", "kind"] and "bench" not in header
    fields = {k for r in [*gemm_rows(), *all_reduce_rows()] for k in r} - {"kind"}
    assert fields <= set(header) and len(header) == len(set(header))
    assert len(table) == 1 + 16 + 6
    rows = [dict(zip(header, r, strict=True)) for r in table[1:]]
    assert rows[0]["run_id"] == v1.name and rows[0]["kind"] == "gemm" and rows[0]["passed"] == "true"
    assert rows[-1]["kind"] == "all_reduce" and rows[-1]["bytes"] == str(1 << 26) and rows[-1]["m"] == ""


def test_prometheus_headlines_follow_the_text_format(results_dir: Path) -> None:
    rows = [*gemm_rows(host="gpu-node-1", uuid="GPU-1a2b"), *all_reduce_rows()]
    gpu = write_run(results_dir, rows, hosts=("gpu-node-1",), device="NVIDIA H100 80GB HBM3",
                    uuids=["GPU-1a2b-0", "GPU-1a2b-1"])  # fmt: skip
    odd = write_run(results_dir, gemm_rows(host='we"ird\\host\nname'), hosts=('we"ird\\host\nname',),
                    started=T0 + timedelta(hours=1))  # fmt: skip
    text = export([copy_v1(results_dir), gpu, odd], "prometheus", KINDS)
    families = check_exposition(text)
    assert set(families) == {"harness_gemm_tflops", "harness_all_reduce_busbw_gbps", "harness_run_start_time_seconds"}
    assert len(families["harness_gemm_tflops"]) == 6 + 4 + 4  # per GPU and dtype: v1 3 dtypes x 2 ranks, others 2 x 2
    line = next(s for s in families["harness_gemm_tflops"] if 'gpu="GPU-1a2b-1"' in s and "bfloat16" in s)
    assert 'device="NVIDIA H100 80GB HBM3"' in line and 'host="gpu-node-1"' in line
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(0.22)  # the best shape of that GPU and dtype
    assert 'host="we\\"ird\\\\host\\nname"' in text
    starts = families["harness_run_start_time_seconds"]
    assert len(starts) == 3 and any(s.endswith(" 1795835447.766") for s in starts)  # the v1 run's 03:10:47.766


def test_label_escaping_and_metric_names() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert metric_name("harness", "all-reduce", "busbw.gbps") == "harness_all_reduce_busbw_gbps"
    assert re.fullmatch(METRIC, metric_name("9lives"))


def test_mllog_lines_of_a_training_run(results_dir: Path) -> None:
    run = write_run(results_dir, train_rows(20), task="train",
                    config={"train": {"seed": 7, "seq_len": 128, "micro_batch": 4}},
                    train={"tokens_per_step": 1024, "seed": 7})  # fmt: skip
    bench = write_run(results_dir, gemm_rows(), started=T0 + timedelta(hours=1))
    text = export([run, bench], "mllog", KINDS)  # the benchmark run has no training rows: no lines
    records = []
    for line in text.splitlines():
        m = re.fullmatch(r":::MLLOG (\{.*\})", line)
        assert m, line
        record = json.loads(m.group(1))
        assert list(record) == ["namespace", "time_ms", "event_type", "key", "value", "metadata"]
        assert record["event_type"] in ("POINT_IN_TIME", "INTERVAL_START", "INTERVAL_END")
        assert isinstance(record["time_ms"], int) and record["metadata"]["run_id"] == run.name
        records.append(record)
    keys = [r["key"] for r in records]
    assert keys[keys.index("run_start") - 3 : keys.index("run_start")] == ["seed", "global_batch_size",
                                                                          "max_sequence_length"]  # fmt: skip
    start = records[keys.index("run_start")]
    assert start["event_type"] == "INTERVAL_START" and start["time_ms"] == int(T0.timestamp() * 1000)
    assert records[-1]["key"] == "run_stop" and records[-1]["event_type"] == "INTERVAL_END"
    assert records[-1]["metadata"]["status"] == "success"
    losses = [r for r in records if r["key"] == "train_loss"]
    assert [r["metadata"]["step"] for r in losses] == list(range(1, 21)) and losses[1]["value"] == 5.0
    assert losses[-1]["metadata"]["samples_count"] == 8 * 20  # global batch 1024 / 128 tokens
    times = [r["time_ms"] for r in records]
    assert times == sorted(times)
    assert next(r for r in records if r["key"] == "train_samples")["value"] == 160
    assert next(r for r in records if r["key"] == "tokens_per_s")["value"] == 2048.0


def test_unknown_format_and_unreadable_runs_are_config_errors(results_dir: Path) -> None:
    run = write_run(results_dir, gemm_rows())
    with pytest.raises(ConfigError, match="csv, prometheus, mllog"):
        export([run], "xml", KINDS)  # type: ignore[arg-type]
    (run / "manifest.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        export([run], "csv", KINDS)
