"""`harness accept` on 4 CPU ranks through the harness's launcher: a clean run passes, a slow
rank and a corrupted result are found and named (faults injected for real), and the HTML report
loads in headless Chromium."""

from __future__ import annotations

import html
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import Run, need, run_cmd

pytestmark = pytest.mark.integration
# Four ranks share this machine's two cores, so a rank's figures swing by up to about 30 % from
# run to run: the gates flag only figures more than half below the peers' median here, and the
# injected slow rank is 5x (80 %) slower.
ACCEPT = ["harness", "accept", "launch.nproc=4", "accept.outlier_min_rel=0.5", "hardware=cpu",
          "hardware.thresholds.gemm_float32=0.5", "hardware.thresholds.memory_triad=0.4",
          "fault.slow_factor=5"]  # fmt: skip


def accept(results_dir: Path, *extra: str) -> Run:
    return run_cmd([*ACCEPT, f"results.dir={results_dir}", *extra], timeout=240)


def flagged(run: Run) -> list[dict]:
    return run.manifest["accept"]["flagged"]


def test_a_clean_run_passes_with_its_reports(results_dir: Path) -> None:
    run = accept(results_dir)
    assert run.proc.returncode == 0, run.output
    run.validate()
    manifest = run.manifest
    assert manifest["status"] == "ok" and manifest["accept"]["verdict"] == "pass"
    assert manifest["accept"]["profile"] == "cpu" and manifest["accept"]["fault_injection"] is None
    assert flagged(run) == [] and (run.run_dir / "exclude.txt").read_text() == ""
    checks = [r for r in run.rows if r["kind"] == "accept_check"]
    names = {r["name"] for r in checks}
    assert {"gemm_float32_tflops", "memory_triad_gbps", "cpu_cores", "correctness_gemm", "gpu_health"} <= names
    assert {r["status"] for r in checks if r["name"] == "node_pair_busbw_gbps"} == {"n/a"}  # one node
    suite = ET.parse(run.run_dir / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) == len(checks) and suite.get("failures") == "0"
    assert "# Acceptance: PASS" in (run.run_dir / "report.md").read_text()
    assert "acceptance: PASS" in run.proc.stdout


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One run with rank 2 slowed, shared by the detection and the report tests."""
    return accept(tmp_path_factory.mktemp("slow"), "fault.slow_rank=2")


def test_a_slow_rank_is_flagged_and_fails_the_run(slow_run: Run) -> None:
    run = slow_run
    assert run.proc.returncode == 1, run.output
    manifest = run.manifest
    assert manifest["status"] == "failed" and manifest["accept"]["verdict"] == "fail"
    assert manifest["accept"]["fault_injection"] == {"slow_rank": 2}  # marked as a test
    ranks = {f["rank"] for f in flagged(run)}
    assert ranks == {2}, flagged(run)
    host = flagged(run)[0]["host"]
    assert (run.run_dir / "exclude.txt").read_text().strip() == host
    assert f"scontrol update nodename={host} state=drain" in run.proc.stdout
    assert "FLAGGED" in run.proc.stdout and "rank2" in run.proc.stdout
    # Re-tested before it was flagged (accept.retries=1): both attempts are in the record.
    retested = manifest["accept"]["retested"]
    assert retested and all(len(r["values"]) == 2 for r in retested)
    assert {r["subject"] for r in retested} >= {f["subject"] for f in flagged(run) if f["check"].startswith("gemm")}
    assert any(r.get("attempt") == 2 for r in run.rows) and "re-tested" in flagged(run)[0]["reason"]


def test_two_ranks_are_not_gated_by_peers_and_pass_with_a_note(results_dir: Path) -> None:
    """The default `make run` shape: two CPU ranks cannot say which one is slow, so the cpu
    profile's relative gates are not applicable (said on top of every report) and the run passes."""
    run = run_cmd(["harness", "accept", f"results.dir={results_dir}"], timeout=240)
    assert run.proc.returncode == 0, run.output
    note = "not gated by peers (2 < 3)"
    assert note in run.proc.stdout and note in (run.run_dir / "report.md").read_text()
    assert note in html.unescape((run.run_dir / "report.html").read_text())
    assert any(note in b for b in run.manifest["accept"]["banners"])
    statuses = {r["name"]: r["status"] for r in run.rows if r["kind"] == "accept_check"}
    assert statuses["gemm_float32_tflops"] == "n/a" and statuses["correctness_gemm"] == "pass"
    memory = [r for r in run.rows if r["kind"] == "memory"]
    assert memory and all(r["gbps_best"] >= r["gbps"] for r in memory)  # STREAM's best of N beside the median


def test_a_corrupted_result_fails_the_correctness_gate_and_names_the_rank(results_dir: Path) -> None:
    run = accept(results_dir, "fault.corrupt_rank=1")
    assert run.proc.returncode == 1, run.output
    wrong = [f for f in flagged(run) if f["check"].startswith("correctness_")]
    assert wrong and {f["rank"] for f in wrong} == {1}, flagged(run)
    assert "rank 1:" in wrong[0]["reason"]


def test_html_report_loads_in_headless_chromium(slow_run: Run, tmp_path: Path) -> None:
    chromium = need("chromium", "Debian's chromium renders the report (make test installs it)")
    run = slow_run
    page = run.run_dir / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="scorecard"' in dom.stdout and "Acceptance: FAIL" in dom.stdout and "FAIL" in dom.stdout
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr  # no script or load errors
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri()],
                   capture_output=True, timeout=90, check=True)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert json.loads((run.run_dir / "manifest.json").read_text())["files"]  # plots and reports recorded
