"""`harness results regress` and `baseline`: a slower run is caught, an equal rerun passes, JUnit XML for CI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest

from harness.catalog import REGRESS_FLOOR, baselines, regress, resolve_run, set_baseline
from harness.catalog.baseline import BASELINES, baseline_of
from harness.errors import EXIT_FAILED, EXIT_OK, ConfigError
from harness.results.read import INDEX, iter_runs
from tests.unit.test_catalog_helpers import KINDS, T0, all_reduce_rows, copy_v1, gemm_rows, record_run, write_run

HOUR = timedelta(hours=1)


def test_a_slower_run_fails_naming_metric_subject_and_ratio(results_dir: Path) -> None:
    baseline = write_run(results_dir, [*gemm_rows(1.0), *all_reduce_rows(1.0)])
    rows = [*gemm_rows(1.0), *all_reduce_rows(1.0)]
    for row in rows:
        if row["kind"] == "gemm" and row["dtype"] == "bfloat16" and row["m"] == 128:
            row["tflops"] *= 0.8  # one shape, both ranks: 20 % slower
    slower = write_run(results_dir, rows, started=T0 + HOUR)
    result = regress(slower, baseline, KINDS)
    assert result.exit_code == EXIT_FAILED and not result.passed
    assert len(result.checks) == 8 + 6 * 3 and len(result.failures) == 2
    failure = result.failures[0]
    assert failure.name == "gemm.tflops" and failure.ratio == pytest.approx(0.8)
    assert "dtype=bfloat16 m=128 n=128 k=128 rank=0" in failure.message and "0.800x the baseline" in failure.message
    assert "20.0% worse" in failure.message and f"tolerance {REGRESS_FLOOR:.1%}" in failure.message
    lines = result.lines()
    assert lines[0].startswith("REGRESSION gemm.tflops [") and lines[-1].startswith("FAIL: 2 of 26 metrics")


def test_an_equal_rerun_passes(results_dir: Path) -> None:
    baseline = write_run(results_dir, [*gemm_rows(1.0), *all_reduce_rows(1.0)])
    rerun = write_run(results_dir, [*gemm_rows(0.97), *all_reduce_rows(1.02)], started=T0 + HOUR)  # within 5 %
    result = regress(rerun, baseline, KINDS)
    assert result.passed and result.exit_code == EXIT_OK and result.failures == ()
    assert result.lines()[-1].startswith("pass: 0 of 26 metrics")


def test_the_default_tolerance_is_the_measured_noise(results_dir: Path) -> None:
    baseline = write_run(results_dir, gemm_rows(1.0, noise=0.12))
    slower = write_run(results_dir, gemm_rows(0.9, noise=0.01), started=T0 + HOUR)
    assert regress(slower, baseline, KINDS).passed  # 10 % is inside the 12 % the baseline shows
    assert not regress(slower, baseline, KINDS, tolerance=0.05).passed  # a stated tolerance replaces the noise
    assert regress(slower, baseline, KINDS, tolerance=0.15).passed
    with pytest.raises(ConfigError, match="fraction"):
        regress(slower, baseline, KINDS, tolerance=5)


def test_junit_xml_has_one_testcase_per_matched_metric(results_dir: Path) -> None:
    rows = gemm_rows(0.5)
    rows[0]["dtype"] = 'bf16 <"odd"> & \x01'  # no partner: unmatched; and a string XML must survive
    rows[1]["dtype"] = rows[0]["dtype"]
    base_rows = gemm_rows(1.0)
    base_rows[0]["dtype"] = rows[0]["dtype"]
    baseline = write_run(results_dir, base_rows, started=T0 + HOUR)
    slower = write_run(results_dir, rows, started=T0 + 2 * HOUR)
    result = regress(slower, baseline, KINDS)
    root = ET.fromstring(result.junit_xml())  # strict: raises on anything not well-formed
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(result.checks) == 7 and root.get("tests") == "7"
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == len(result.failures) == int(root.get("failures", "-1")) == 7
    assert {c.get("classname") for c in cases} == {"gemm.tflops"}
    assert any('bf16 <"odd"> & ?' in (c.get("name") or "") for c in cases)
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"run": slower.name, "baseline": baseline.name, "unmatched": "1"}


def test_regress_on_runs_of_the_real_writer(results_dir: Path) -> None:
    baseline = record_run(results_dir, gemm_rows(1.0))
    equal = record_run(results_dir, gemm_rows(1.0))
    slower = record_run(results_dir, gemm_rows(0.7))
    assert regress(equal, baseline, KINDS).exit_code == EXIT_OK
    assert regress(slower, baseline, KINDS).exit_code == EXIT_FAILED


def test_baselines_are_named_stored_and_resolved(results_dir: Path) -> None:
    v1 = copy_v1(results_dir)
    other = write_run(results_dir, gemm_rows(), started=T0 + HOUR)
    entry = set_baseline(results_dir, "vm", v1)
    assert entry.run == v1.name and entry.run_id == v1.name
    set_baseline(results_dir, "alps/gpu", other)
    set_baseline(results_dir, "vm", other)  # renaming the baseline of a system replaces it
    stored = json.loads((results_dir / BASELINES).read_text())
    assert set(stored["baselines"]) == {"alps/gpu", "vm"} and stored["baselines"]["vm"]["run"] == other.name
    assert set(baselines(results_dir)) == {"alps/gpu", "vm"}
    assert resolve_run("vm", results_dir) == results_dir / other.name
    assert resolve_run(v1.name, results_dir) == results_dir / v1.name  # a run id
    assert resolve_run(str(v1), results_dir) == v1  # a path
    assert sorted(baseline_of(other, results_dir)) == ["alps/gpu", "vm"]
    with pytest.raises(ConfigError, match="neither a run directory"):
        resolve_run("nope", results_dir)
    # the baselines file and the index are the only files written in the results dir
    assert sorted(p.name for p in results_dir.iterdir() if p.is_file()) == [BASELINES]
    list(iter_runs(results_dir))
    assert sorted(p.name for p in results_dir.iterdir() if p.is_file()) == [INDEX, BASELINES]


def test_only_a_sound_finished_run_can_be_a_baseline(results_dir: Path, tmp_path: Path) -> None:
    failed = write_run(results_dir, gemm_rows(), status="failed")
    with pytest.raises(ConfigError, match="status failed"):
        set_baseline(results_dir, "vm", failed)
    damaged = write_run(results_dir, gemm_rows(), started=T0 + HOUR)
    (damaged / "rows.jsonl").write_text("{")
    with pytest.raises(ConfigError, match="truncated"):
        set_baseline(results_dir, "vm", damaged)
    with pytest.raises(ConfigError, match="SYSTEM/PARTITION"):
        set_baseline(results_dir, "a b", failed)
    outside = write_run(tmp_path / "elsewhere", gemm_rows())
    assert set_baseline(results_dir, "ext", outside).run == str(outside.resolve())
    assert resolve_run("ext", results_dir) == outside.resolve()
    (results_dir / BASELINES).write_text("[]")
    with pytest.raises(ConfigError, match="not a baselines file"):
        baselines(results_dir)
