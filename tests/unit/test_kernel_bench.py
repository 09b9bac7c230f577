"""The kernels benchmark's byte and FLOP counts by hand, and its plan on a CPU."""

from __future__ import annotations

from harness.bench.base import BenchSpec, PlanEnv
from harness.bench.kernel_cases import model_dims, op_bytes, op_flops, op_shapes
from harness.bench.kernel_ops import BENCHMARK, KernelCase
from tests.helpers import bench_spec


def test_llama3_8b_sizes_come_from_the_preset() -> None:
    d = model_dims("llama3-8b")
    assert (d.dim, d.ffn_dim, d.n_heads, d.n_kv_heads, d.vocab_size) == (4096, 14336, 32, 8, 128256)
    shapes = op_shapes("rope", d, 4096)
    assert shapes == {"q": (1, 4096, 32, 128), "k": (1, 4096, 8, 128)}


def test_minimal_bytes_by_hand() -> None:
    d = model_dims("llama3-8b")
    t = 4096
    # RMSNorm bf16: read x + w, write y; backward reads x, dy, w and writes dx, dw.
    assert op_bytes("rms_norm", op_shapes("rms_norm", d, t), 2, "fwd") == 2 * (2 * t * 4096 + 4096)
    assert op_bytes("rms_norm", op_shapes("rms_norm", d, t), 2, "fwd_bwd") == 2 * (5 * t * 4096 + 3 * 4096)
    # SwiGLU: 3 tensors forward, 5 backward.
    assert op_bytes("swiglu", op_shapes("swiglu", d, t), 2, "fwd_bwd") == 2 * 8 * t * 14336
    # RoPE: q (32 heads) and k (8 heads) of 128, read and written each way.
    assert op_bytes("rope", op_shapes("rope", d, t), 2, "fwd") == 2 * 2 * t * 40 * 128
    assert op_flops("rope", op_shapes("rope", d, t), "fwd") is None
    # Fused cross-entropy: 2·T·h·V forward, three times that with backward.
    flce = op_shapes("fused_linear_cross_entropy", d, t)
    assert op_flops("fused_linear_cross_entropy", flce, "fwd") == 2 * t * 4096 * 128256
    assert op_flops("fused_linear_cross_entropy", flce, "fwd_bwd") == 6 * t * 4096 * 128256


def spec(**kw) -> BenchSpec:
    return bench_spec(**kw)


def test_cpu_plan_leaves_fused_out_with_a_note_and_orders_baselines_first() -> None:
    env = PlanEnv(device_type="cpu", free_memory_bytes=2**34)
    cases = BENCHMARK.plan(spec(kernel_ops=("swiglu",), kernel_tokens=8), ("float32",), env)
    assert cases[0].labels()["op"] == "copy"  # the bandwidth reference comes first
    assert [(c.mode, c.impl) for c in cases[1:]] == [
        ("fwd", "eager"), ("fwd", "compile"), ("fwd_bwd", "eager"), ("fwd_bwd", "compile")
    ]  # fmt: skip
    assert any("fused not applicable on cpu" in n for n in env.notes)
    assert all(c.model == "small" for c in cases[1:])


def test_gpu_plan_runs_fused_after_both_baselines() -> None:
    env = PlanEnv(device_type="cuda", free_memory_bytes=80 * 2**30)
    cases = BENCHMARK.plan(spec(kernel_ops=("rms_norm",), kernel_models=("llama3-70b",)), ("bfloat16",), env)
    assert [c.impl for c in cases[1:4]] == ["eager", "compile", "fused"]
    assert cases[1].tokens == 16384 and cases[1].shape == "16384x8192 8192"


def test_a_wrong_kernel_result_fails_its_check() -> None:
    import torch

    from harness.bench.kernel_cases import build_case

    case = KernelCase("float32", "swiglu", "tiny", "fwd_bwd", "eager", "launch", 3, "", 0)
    built = build_case(case, model_dims("tiny"), torch.device("cpu"), seed=0)
    built.reset()
    built.run()
    assert built.verify()["passed"]
    built.output.view(-1)[5] += 1.0  # one wrong element among 3 x 352
    check = built.verify()
    assert not check["passed"] and check["max_rel_error"] > 0.01


def test_a_nan_gradient_fails_the_check(monkeypatch) -> None:
    """The forward is right but one gradient is NaN: the row must fail (NaN compares false)."""
    import torch

    from harness.bench import kernel_cases
    from kernels import reference

    class NanGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            return reference.rms_norm(x, w)

        @staticmethod
        def backward(ctx, dy):
            return torch.full_like(dy, float("nan")), torch.zeros(dy.shape[-1])

    monkeypatch.setitem(kernel_cases.fused_ops(), "rms_norm", NanGrad.apply)
    case = KernelCase("float32", "rms_norm", "tiny", "fwd_bwd", "fused", "launch", 3, "", 0)
    built = kernel_cases.build_case(case, model_dims("tiny"), torch.device("cpu"), seed=0)
    built.reset()
    built.run()
    check = built.verify()
    assert not check["passed"] and check["max_rel_error"] != check["max_rel_error"]  # NaN
