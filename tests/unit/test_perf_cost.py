"""Each term of the cost model (harness.perf.comm, compute, step) against hand-computed values."""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import pytest

from harness.errors import ConfigError
from harness.hardware import profiles
from harness.perf import comm
from harness.perf.assumptions import DEFAULT
from harness.perf.compute import Gemm, attention_flops, backward_gemms, gemm_time_s, layer_gemms, wave_efficiency
from harness.perf.device import Device, device_from_profile
from harness.perf.layout import Layout
from harness.perf.shape import ModelShape, flops_per_token
from harness.perf.step import BREAKDOWN, estimate_step, straggler_factor
from harness.perf.workload import Workload

L405 = ModelShape(vocab_size=128256, dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, ffn_dim=53248)
L8 = ModelShape(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336)
H100 = device_from_profile(profiles()["h100-sxm"])


def test_ring_all_reduce_by_hand() -> None:
    # 2(n-1)·α + 2(n-1)/n · S/B with n = 8, S = 1 GB, B = 100 GB/s, α = 5 µs
    t = comm.ring_time_s("all_reduce", 1e9, 8, bw_gbps=100, alpha_s=5e-6)
    assert t == pytest.approx(14 * 5e-6 + 2 * 7 / 8 * 1e9 / 100e9)
    assert comm.ring_time_s("all_gather", 1e9, 8, bw_gbps=100, alpha_s=5e-6) == pytest.approx(7 * 5e-6 + 7 / 8 * 0.01)
    assert comm.ring_time_s("reduce_scatter", 1e9, 8, bw_gbps=100, alpha_s=5e-6) == pytest.approx(7 * 5e-6 + 0.00875)
    assert comm.ring_time_s("sendrecv", 1e9, 2, bw_gbps=100, alpha_s=5e-6) == pytest.approx(5e-6 + 0.01)
    assert comm.ring_time_s("all_reduce", 1e9, 1, bw_gbps=100, alpha_s=5e-6) == 0.0
    assert comm.tree_all_reduce_s(1e9, 16, bw_gbps=100, alpha_s=5e-6) == pytest.approx(8 * 5e-6 + 0.02)


def test_profile_bandwidths_are_one_direction() -> None:
    assert H100.nvlink_gbps == 450 and H100.nic_gbps == 50 and H100.nvlink_domain == 8
    assert H100.latency_intra_s == pytest.approx(3.4e-6) and H100.latency_inter_s == pytest.approx(9.6e-6)


def test_collective_inside_a_node_uses_nvlink() -> None:
    span = comm.group_span(8, 1, 8)
    assert span == comm.Span(8, 8, 1)
    size = 8192 * 16384 * 2
    ring = 7 * 3.4e-6 + 7 / 8 * size / (450 * 0.80 * 1e9)
    assert comm.collective_time_s("all_gather", size, span, H100) == pytest.approx(comm.COLLECTIVE_BASE_S + ring)


def test_collective_across_nodes_is_bound_by_the_nics() -> None:
    span = comm.group_span(128, 8, 8)  # a DP group: one GPU per node
    assert span == comm.Span(128, 1, 128)
    size = 6e9
    expected = comm.COLLECTIVE_BASE_S + 127 * 9.6e-6 + 127 / 128 * size / (50 * 0.9 * 1e9)
    assert comm.collective_time_s("reduce_scatter", size, span, H100) == pytest.approx(expected)
    # 16 ranks, 8 per node: the flat ring uses 8 NICs per node, as fast as NVLink here (8 × 45 = 360)
    both = comm.group_span(16, 1, 8)
    assert both == comm.Span(16, 8, 2)
    flat = 28 * 3.4e-6 + 2 * 9.6e-6 + 2 * 15 / 16 * size / 360e9  # 30 steps, 2 of them across nodes
    assert comm.collective_time_s("all_reduce", size, both, H100) == pytest.approx(comm.COLLECTIVE_BASE_S + flat)


def test_nvl72_domain_holds_a_dp_group() -> None:
    gb200 = device_from_profile(profiles()["gb200"])
    assert comm.group_span(9, 8, gb200.nvlink_domain) == comm.Span(9, 9, 1)


def test_tp_bytes_per_layer() -> None:
    size = 8192 * 16384 * 2  # tokens × h × 2 bytes
    # sequence parallel: forward 2 all_gather + 2 reduce_scatter, backward 2 + 2 and 2 re-gathers
    assert comm.tp_bytes_per_layer(dim=16384, tokens=8192, tp=8, sequence_parallel=True) == 10 * size
    assert comm.tp_bytes_per_layer(dim=16384, tokens=8192, tp=8, sequence_parallel=True, recompute=True) == 14 * size
    assert comm.tp_bytes_per_layer(dim=16384, tokens=8192, tp=8, sequence_parallel=False) == 4 * size
    ops = [c.op for c in comm.tp_collectives(dim=16384, tokens=8192, tp=8, sequence_parallel=True, recompute=False)]
    assert ops.count("all_gather") == 6 and ops.count("reduce_scatter") == 4
    assert comm.tp_bytes_per_layer(dim=16384, tokens=8192, tp=1, sequence_parallel=True) == 0


def test_cp_and_pp_bytes() -> None:
    # K and V of 131,072 tokens, one KV head of 128 per TP rank (8 KV heads / tp 8), bf16
    assert comm.cp_kv_bytes(seq_len=131072, micro_batch=1, kv_heads_local=1, head_dim=128) == 2 * 131072 * 128 * 2
    assert comm.pp_activation_bytes(tokens=8192, dim=16384, tp=8, sequence_parallel=True) == 8192 * 16384 * 2 // 8


def test_straggler_factor() -> None:
    assert straggler_factor(1, 0.0175) == 1.0
    assert straggler_factor(8, 0.0175) == pytest.approx(1 + 0.0175 * NormalDist().inv_cdf(7.625 / 8.25))
    assert 1.06 < straggler_factor(16384, 0.0175) < 1.075


def test_gemm_time_at_the_ceiling_plus_a_fixed_cost() -> None:
    device = Device("toy", {"bfloat16": 1000.0}, 80, 1e6, 450, 8, 50, 3e-6, 1e-5, gemm_fraction={"bfloat16": 0.8})
    gemm = Gemm("square", 8192, 8192, 8192)
    assert gemm_time_s(gemm, device, "bf16", DEFAULT) == pytest.approx(2 * 8192**3 / 800e12 + DEFAULT.gemm_fixed_s)
    slow_memory = dataclasses.replace(device, memory_tbps=0.001)  # 1 GB/s: the roofline's memory side rules
    bytes_moved = 2 * 3 * 8192 * 8192
    expected = bytes_moved / (1e9 * DEFAULT.memory_efficiency) + DEFAULT.gemm_fixed_s
    assert gemm_time_s(gemm, slow_memory, "bfloat16", DEFAULT) == pytest.approx(expected)
    assert gemm_time_s(gemm, device, "bfloat16", dataclasses.replace(DEFAULT, gemm_fixed_s=0)) == pytest.approx(
        2 * 8192**3 / 800e12
    )


def test_wave_quantization() -> None:
    # 8192 × 2304 in 128×256 tiles: 64 × 9 = 576 tiles in 5 waves of 132 SMs
    assert wave_efficiency(8192, 2304, 132) == pytest.approx(576 / 660)
    assert wave_efficiency(8192, 16384, 132) == pytest.approx(4096 / (32 * 132))
    assert wave_efficiency(256, 256, 132) == 1.0 and wave_efficiency(8192, 2304, None) == 1.0


def test_measured_gemm_rows_replace_the_curve() -> None:
    calibrated = dataclasses.replace(H100, gemm_table={"bfloat16": ((1e9, 100.0), (1e12, 700.0))})
    assert gemm_time_s(Gemm("g", 10000, 10000, 5000), calibrated, "bfloat16", DEFAULT) == pytest.approx(1e12 / 700e12)
    middle = math.sqrt(1e9 * 1e12)  # halfway in log-FLOPs: 400 TFLOP/s
    assert middle / (400e12) == pytest.approx(gemm_time_s(Gemm("g", 1, 1, int(middle / 2)), calibrated, "bfloat16",
                                                          DEFAULT), rel=1e-3)  # fmt: skip


def test_layer_gemms_add_up_to_the_parameters() -> None:
    gemms = layer_gemms(L405, tokens=8192, tp=8)
    weights = sum(g.n * g.k for g in gemms)
    assert weights * 8 == 2 * 16384 * 16384 + 2 * 16384 * 1024 + 3 * 16384 * 53248  # wq, wo, wk, wv, MLP
    dgrad, wgrad = backward_gemms(gemms[0])
    assert dgrad.flops == wgrad.flops == gemms[0].flops


def test_attention_flops_match_both_conventions() -> None:
    seq = 8192
    full = attention_flops(L405, seq_len=seq, micro_batch=1, tp=1, cp=1, causal=False)
    assert 3 * full * L405.n_layers / seq == 12 * L405.n_layers * L405.n_heads * L405.head_dim * seq
    assert attention_flops(L405, seq_len=seq, micro_batch=1, tp=8, cp=2, causal=True) == full / 8 / 2 / 2
    non_causal, causal = flops_per_token(L405, seq), flops_per_token(L405, seq, causal=True)
    assert non_causal - causal == 6 * 126 * 128 * 128 * seq


def test_step_breakdown_adds_up() -> None:
    lay = Layout(tp=8, pp=16, pp_schedule="interleaved_1f1b", pp_virtual_stages=4).resolve(8192, global_batch=2048)
    work = Workload(seq_len=8192, global_batch=2048)
    est = estimate_step(L405, lay, work, H100)
    assert sum(getattr(est, name) for name in BREAKDOWN) == pytest.approx(est.step_time_s)
    assert est.tokens_per_s == pytest.approx(2048 * 8192 / est.step_time_s)
    assert est.tflops_per_device == pytest.approx(flops_per_token(L405, 8192) * est.tokens_per_s / 8192 / 1e12)
    assert est.mfu == pytest.approx(est.tflops_per_device / 989)
    assert est.tflops_per_device_causal < est.tflops_per_device == est.hw_tflops_per_device
    assert est.pp_bubble_s / est.step_time_s == pytest.approx(15 / (4 * 32 + 15), rel=0.1)
    assert est.tp_comm_s > 0 and est.dp_comm_exposed_s > 0 and est.cp_comm_s == 0


def test_uneven_interleaved_chunks_cost_the_largest() -> None:
    """80 layers on 8 stages of 10, each in 8 chunks: chunks of 1 or 2 layers, and the warm-up
    runs at the pace of the 2-layer ones: (8 − 1)·2/10 stage-steps, not (8 − 1)/8."""
    shape = dataclasses.replace(L8, n_layers=80)
    work = Workload(seq_len=8192, global_batch=64)
    est = {}
    for v in (1, 8):
        lay = Layout(tp=8, pp=8, pp_schedule="interleaved_1f1b", pp_virtual_stages=v).resolve(512, global_batch=64)
        est[v] = estimate_step(shape, lay, work, H100)
    m = 8  # 64 sequences over 8 replicas
    assert est[1].bubble_fraction == pytest.approx(7 / (m + 7))
    assert est[8].bubble_fraction == pytest.approx(1.4 / (m + 1.4))
    assert est[8].pp_bubble_s / est[1].pp_bubble_s == pytest.approx(1.4 / 7, rel=1e-6)
    even = Layout(tp=8, pp=8, pp_schedule="interleaved_1f1b", pp_virtual_stages=8).resolve(512, global_batch=64)
    assert estimate_step(dataclasses.replace(L8, n_layers=64), even, work, H100).bubble_fraction == pytest.approx(
        7 / 8 / (m + 7 / 8)
    )


def test_recompute_and_fp8() -> None:
    lay = Layout(tp=8, pp=16).resolve(16384, global_batch=2048)
    plain = estimate_step(L405, lay, Workload(seq_len=8192, global_batch=2048), H100)
    again = estimate_step(L405, lay, Workload(seq_len=8192, global_batch=2048, activation_checkpointing=True), H100)
    fp8 = estimate_step(L405, lay, Workload(seq_len=8192, global_batch=2048, dtype="fp8"), H100)
    assert again.step_time_s > plain.step_time_s and again.hw_tflops_per_device > again.tflops_per_device
    assert again.hfu == pytest.approx(again.hw_tflops_per_device / 989)
    assert fp8.step_time_s < plain.step_time_s and fp8.mfu == pytest.approx(fp8.tflops_per_device / 1979)


def test_fsdp_without_pp_communicates_every_microbatch() -> None:
    lay = Layout().resolve(64, global_batch=512)
    est = estimate_step(L8, lay, Workload(seq_len=8192, global_batch=512), H100)
    once = estimate_step(L8, lay, Workload(seq_len=8192, global_batch=512), H100,
                         assumptions=dataclasses.replace(DEFAULT, dp_overlap=0.0))  # fmt: skip
    assert once.dp_comm_exposed_s > est.dp_comm_exposed_s > 0


def test_profiles_without_network_figures_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"hardware=cpu: the profile has no memory_gib, link_gbps, nvlink_domain"):
        device_from_profile(profiles()["cpu"])
    with pytest.raises(ConfigError, match=r"hardware=h100-pcie: the profile has no nvlink_domain, nic_gbit_per_s"):
        device_from_profile(profiles()["h100-pcie"])
    with pytest.raises(ConfigError, match="no float8 peak"):
        device_from_profile(profiles()["a100-sxm"]).gemm_ceiling_tflops("fp8")
