"""Acceptance gates by hand: thresholds, site references, the robust outlier rule (at 10,000
ranks), node-pair localisation, node lists, drain lines and JUnit output."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from harness import hardware
from harness.accept import gates, report
from harness.accept.checks import Check
from harness.accept.gates import Figure
from harness.bench import node_pairs
from harness.errors import ConfigError

H100 = hardware.profiles()["h100-sxm"]
CPU = hardware.profiles()["cpu"]


def gpu_figure(value: float, rank: int, metric: str = "gemm_bfloat16_tflops") -> Figure:
    host = f"n{rank // 8 + 1}"
    return Figure(metric, "gpu", f"{host} gpu{rank % 8}", value, "TFLOP/s", host, rank, rank % 8, f"GPU-{rank:04d}")


def judge(figures: list[Figure], profile=H100, site=None, partition="*", k=4.0, min_rel=0.10) -> list[Check]:
    return gates.judge(figures, profile, site=site or {}, partition=partition, outlier_mad=k, outlier_min_rel=min_rel)


def by(checks: list[Check], name: str) -> list[Check]:
    return [c for c in checks if c.name == name]


def test_absolute_threshold_shows_both_numbers() -> None:
    checks = judge([gpu_figure(780.0, 0), gpu_figure(700.0, 1)])
    ok, low = by(checks, "gemm_bfloat16_tflops")
    assert ok.status == "pass" and ok.threshold == pytest.approx(0.75 * 989)
    assert low.status == "fail" and "700 < 741.8 TFLOP/s (0.75 x bfloat16 peak 989)" in low.reason


def test_memory_and_link_thresholds_use_the_datasheet() -> None:
    mem = Figure("memory_triad_gbps", "gpu", "n1 gpu0", 2600.0, "GB/s", "n1", 0, 0)
    link = Figure("all_reduce_busbw_gbps", "node", "n1", 365.0, "GB/s", "n1")
    (m,) = by(judge([mem]), "memory_triad_gbps")
    (a,) = by(judge([link]), "all_reduce_busbw_gbps")
    assert m.status == "fail" and m.threshold == pytest.approx(0.8 * 3350)
    assert a.status == "pass" and a.threshold == pytest.approx(0.8 * 450)  # half of 900 GB/s both ways


def test_relative_profile_judges_against_the_peers_median() -> None:
    figures = [gpu_figure(v, i, "gemm_float32_tflops") for i, v in enumerate([1.0, 1.1, 0.9, 0.6])]
    checks = by(judge(figures, profile=CPU, min_rel=0.5), "gemm_float32_tflops")
    assert [c.status for c in checks] == ["pass", "pass", "pass", "fail"]  # 0.6 < 0.7 x median 0.95
    assert "the peers' median 0.95" in checks[3].reason
    (single,) = by(judge([gpu_figure(1.0, 0, "gemm_float32_tflops")], profile=CPU), "gemm_float32_tflops")
    assert single.status == "n/a" and "not gated by peers (1 < 3)" in single.reason


def test_two_peers_do_not_gate_each_other() -> None:
    """Two ranks cannot say which one is slow: with fewer than accept.min_peers subjects the peer
    gates are not applicable, and the absolute thresholds still judge."""
    pair = [gpu_figure(0.094, 0, "gemm_float32_tflops"), gpu_figure(0.038, 1, "gemm_float32_tflops")]
    checks = judge(pair, profile=CPU, min_rel=0.1)
    assert {c.status for c in checks} == {"n/a"}
    assert all("not gated by peers (2 < 3)" in c.reason for c in checks)
    assert gates.too_few_peers([*pair], 3) == ["gemm_float32_tflops (2 < 3)"]
    node = Figure("all_reduce_busbw_gbps", "node", "n1", 1.0, "GB/s", "n1")
    note = gates.too_few_peers_note([*pair, node], 3)  # each count names its own figures
    assert note is not None and note.startswith(
        "not gated by peers (2 < 3): gemm_float32_tflops; (1 < 3): all_reduce_busbw_gbps; absolute"
    )
    assert gates.too_few_peers_note([*pair], 2) is None
    absolute = judge([gpu_figure(780.0, 0), gpu_figure(600.0, 1)])  # H100: 0.75 x 989 still judges
    assert [c.status for c in by(absolute, "gemm_bfloat16_tflops")] == ["pass", "fail"]
    assert {c.status for c in by(absolute, "gemm_bfloat16_tflops_outlier")} == {"n/a"}
    checks3 = judge([*pair, gpu_figure(0.095, 2, "gemm_float32_tflops")], profile=CPU, min_rel=0.1)
    assert [c.status for c in by(checks3, "gemm_float32_tflops_outlier")] == ["pass", "fail", "pass"]


def test_the_outlier_limit_is_never_below_zero() -> None:
    median, limit = gates.outlier_limits(np.array([1.0, 100.0, 200.0]), k=4.0, min_rel=0.1)
    assert median == 100.0 and limit == 0.0


def test_unknown_peak_or_threshold_is_not_applicable() -> None:
    (c,) = by(judge([gpu_figure(10.0, 0, "gemm_float64_tflops")]), "gemm_float64_tflops")
    assert c.status == "n/a" and "no threshold for gemm_float64" in c.reason


def test_site_reference_band_with_partition_fallback() -> None:
    site = {"gpu": {"gemm_bfloat16_tflops": {"value": 800, "lower": -0.05, "upper": 0.05}},
            "*": {"gemm_bfloat16_tflops": {"value": 500, "lower": -0.1, "upper": None}}}  # fmt: skip
    inside, below, above = (gpu_figure(v, i) for i, v in enumerate([790.0, 750.0, 850.0]))
    checks = by(judge([inside, below, above], site=site, partition="gpu"), "gemm_bfloat16_tflops_reference")
    assert [c.status for c in checks] == ["pass", "fail", "fail"]
    assert "750 outside [760 .. 840] TFLOP/s (site reference 800)" in checks[1].reason
    other = by(judge([below], site=site, partition="debug"), "gemm_bfloat16_tflops_reference")
    assert other[0].status == "pass" and "450 .. +inf" in other[0].reason  # '*' applies


def test_outlier_is_flagged_even_when_it_passes_the_threshold() -> None:
    values = [800.0, 805.0, 795.0, 802.0, 798.0, 801.0, 799.0, 760.0]  # 760 > 741.8 threshold
    checks = judge([gpu_figure(v, i) for i, v in enumerate(values)], min_rel=0.02)
    assert by(checks, "gemm_bfloat16_tflops")[7].status == "pass"
    outliers = by(checks, "gemm_bfloat16_tflops_outlier")
    assert [c.rank for c in outliers if c.status == "fail"] == [7]
    # median 799.5; MAD 2 x 1.4826 x 4 = 11.9 < the 2 % floor (16.0): limit 799.5 - 16.0
    assert outliers[7].reason == "760 is 5% below the peers' median 799.5 (outlier limit 783.5)"


def test_outlier_floor_keeps_a_tight_fleet_quiet() -> None:
    values = [800.0] * 7 + [790.0]  # MAD 0: without the floor 790 would be an outlier
    outliers = by(judge([gpu_figure(v, i) for i, v in enumerate(values)]), "gemm_bfloat16_tflops_outlier")
    assert all(c.status == "pass" for c in outliers)


def test_outlier_rule_at_10000_ranks_under_a_second() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(790.0, 8.0, 10_000)
    values[[17, 4242, 9999]] = [600.0, 650.0, 700.0]
    figures = [gpu_figure(float(v), i) for i, v in enumerate(values)]
    start = time.perf_counter()
    checks = judge(figures, min_rel=0.05)
    elapsed = time.perf_counter() - start
    flagged = sorted(c.rank for c in by(checks, "gemm_bfloat16_tflops_outlier") if c.status == "fail")
    assert flagged == [17, 4242, 9999]
    assert elapsed < 1.0, f"{elapsed:.2f} s for 10,000 ranks"


def pair_rows(slow_host: str) -> list[dict]:
    """4 nodes x 1 rank, two rounds; the slow node's link is slow in both its exchanges."""
    rows = []
    pairs = {0: [("n1", "n2"), ("n3", "n4")], 1: [("n2", "n3"), ("n4", "n1")]}
    for round_, ps in pairs.items():
        for a, b in ps:
            gbps = 2.0 if slow_host in (a, b) else 10.0
            rows += [{"host": h, "round": round_, "bytes": 1 << 20, "busbw_gbps": gbps} for h in (a, b)]
    return rows


def test_node_pairs_localise_a_bad_link_to_its_node() -> None:
    figures = [gates.place(v, {}, "cpu") for v in node_pairs.BENCHMARK.gate_values(pair_rows("n3"), "pairs")]
    values = {f.subject: f.value for f in figures}
    assert values == {"n1": 10.0, "n2": 10.0, "n3": 2.0, "n4": 10.0}  # neighbours keep their good round
    outliers = by(judge(figures), "node_pair_busbw_gbps_outlier")
    assert [c.subject for c in outliers if c.status == "fail"] == ["n3"]


def test_correctness_names_the_wrong_rank() -> None:
    rows = {"gemm": [{"rank": 0, "passed": True}, {"rank": 1, "passed": False}],
            "all_reduce": [{"group": 0, "passed": False, "wrong_ranks": [3]}]}  # fmt: skip
    devices = {
        1: {"host": "n1", "local_index": 1, "uuid": "GPU-b"},
        3: {"host": "n2", "local_index": 1, "uuid": "GPU-d"},
    }
    checks = gates.correctness(rows, devices, "cuda")
    failed = {(c.name, c.rank, c.subject, c.uuid) for c in checks if c.status == "fail"}
    assert failed == {("correctness_gemm", 1, "n1 gpu1", "GPU-b"), ("correctness_all_reduce", 3, "n2 gpu1", "GPU-d")}


def flagged_checks() -> list[Check]:
    return [
        Check("gemm_bfloat16_tflops", "gpu", "n4 gpu3", "fail", "600 < 741.8", 600.0, host="n4", uuid="GPU-x"),
        Check("node_pair_busbw_gbps_outlier", "node", "n2", "fail", "2 is 80% below", 2.0, host="n2"),
        Check("ecc", "gpu", "n1 gpu0", "warn", "lifetime errors", host="n1"),
        Check("node_pair_busbw_gbps", "cluster", "cluster", "n/a", "one node"),
        Check("driver_consistent", "cluster", "cluster", "fail", "drivers differ"),
        Check("memory", "node", "n1", "pass", "ok", host="n1"),
    ]


def test_exclude_list_and_drain_lines() -> None:
    checks = flagged_checks()
    checks.append(Check("ecc", "gpu", "n5 gpu0", "fail", 'bad"; rm -rf / $(x)', host="n5"))
    assert report.exclude_list(checks) == "n[2,4-5]"  # cluster-wide failures name no node
    run = "20261128T000000Z-accept-abcdef"
    lines = report.drain_lines(checks, run)
    reason = f"harness accept {run}: node_pair_busbw_gbps_outlier"
    assert lines[0] == f'scontrol update nodename=n2 state=drain reason="{reason}"'
    assert all(line.count('"') == 2 and "$" not in line and ";" not in line for line in lines)
    assert report.exclude_list([c for c in checks if c.status != "fail"]) == ""


def test_junit_is_valid_and_counts_every_check() -> None:
    checks = flagged_checks()
    root = ET.fromstring(report.junit(checks, "run-1"))
    (suite,) = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "3", "1")
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases][:2] == ["n4.gpu3", "n2"]
    assert cases[0].find("failure").get("message") == "600 < 741.8"
    assert cases[3].find("skipped") is not None and "WARN" in cases[2].find("system-out").text


def test_html_report_is_one_self_contained_page() -> None:
    checks = flagged_checks()
    page = report.html_report(checks, "fail", {"run": "r1"}, "n[2,4]", ["scontrol ..."], {"x.png": b"\x89PNG"})
    assert page.startswith("<!DOCTYPE html>") and 'id="scorecard"' in page and 'id="flagged"' in page
    assert page.index('id="flagged"') < page.index('id="scorecard"')  # flagged items at the top
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")


def test_auto_profile_detection_and_unknown_device() -> None:
    assert hardware.resolve({"name": "auto"}, "NVIDIA H100 80GB HBM3", "cuda").name == "h100-sxm"
    assert hardware.resolve({"name": "auto"}, "NVIDIA GB200", "cuda").name == "gb200"  # longest pattern wins
    assert hardware.resolve({"name": "auto"}, "AMD EPYC 9654", "cpu").name == "cpu"
    with pytest.raises(ConfigError, match=r"known profiles: a100-sxm, b200, cpu.*add configs/hardware/<name>\.yaml"):
        hardware.resolve({"name": "auto"}, "Some Future GPU", "cuda")


@pytest.mark.parametrize("nodes", [2, 3, 4, 5, 7])
def test_node_pair_rounds_give_every_node_two_partners_when_it_can(nodes: int) -> None:
    from harness.bench.node_pairs import partner, rounds

    for r in rounds(nodes):  # each round pairs nodes both ways, each node at most once
        for node in range(nodes):
            mate = partner(node, nodes, r)
            assert mate is None or partner(mate, nodes, r) == node
    for node in range(nodes):
        partners = {partner(node, nodes, r) for r in rounds(nodes)} - {None}
        assert len(partners) == min(2, nodes - 1), (node, partners)


def test_odd_node_count_does_not_flag_the_bad_nodes_neighbour() -> None:
    """5 nodes, node n2's link slow: n1 (idle in no round now) clears itself with its other partner."""
    from harness.bench.node_pairs import partner, rounds

    hosts = [f"n{i + 1}" for i in range(5)]
    rows = []
    for r in rounds(5):
        for node in range(5):
            mate = partner(node, 5, r)
            if mate is not None:
                gbps = 2.0 if "n2" in (hosts[node], hosts[mate]) else 10.0
                rows.append({"host": hosts[node], "round": r, "bytes": 1 << 20, "busbw_gbps": gbps})
    figures = [gates.place(v, {}, "cpu") for v in node_pairs.BENCHMARK.gate_values(rows, "pairs")]
    outliers = by(judge(figures), "node_pair_busbw_gbps_outlier")
    assert [c.subject for c in outliers if c.status == "fail"] == ["n2"]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_bar_plot_of_a_fleet_stays_a_readable_size() -> None:
    """One bar per GPU up to MAX_BARS; a 10,000-GPU fleet is drawn sorted at a fixed size (one
    bar each was a 385,000-pixel-wide PNG)."""
    from harness import plots

    small = [(f"n0/gpu{i}", 780.0 + i, i == 3) for i in range(8)]
    fleet = [(f"n{i // 8}/gpu{i % 8}", 780.0 + (i % 97) / 10, i == 4321) for i in range(10_000)]
    lines = {"threshold": 741.8}
    small_w, _ = _png_size(plots.figure_bars("gemm_bfloat16_tflops", "TFLOP/s", small, lines))
    fleet_w, fleet_h = _png_size(plots.figure_bars("gemm_bfloat16_tflops", "TFLOP/s", fleet, lines))
    assert fleet_w <= 2000 and fleet_h <= 1000 and small_w <= fleet_w
    big = [(f"g{i}", 1.0, False) for i in range(plots.MAX_BARS)]
    assert _png_size(plots.figure_bars("m", "u", big, {}))[0] > fleet_w  # bars up to the limit
