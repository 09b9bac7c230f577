"""Inputs the fused ops refuse (one clear KernelInputError) or handle as documented."""

from __future__ import annotations

import pytest
import torch

import kernels
from harness.train.model import rope_tables
from kernels import KernelInputError, reference
from tests.kernels.conftest import assert_close, leaves


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: kernels.rms_norm(torch.randn(3, 8), torch.ones(7)), "weight (7,) must be (hidden,)"),
        (lambda: kernels.swiglu(torch.randn(3, 8), torch.randn(3, 9)), "must have the same shape"),
        (lambda: kernels.rope(torch.randn(1, 4, 2, 6), torch.randn(1, 5, 2, 6), *rope_tables(6, 8, 1e4)), "differ"),
        (lambda: kernels.rope(torch.randn(1, 9, 2, 6), torch.randn(1, 9, 2, 6), *rope_tables(6, 8, 1e4)), "(>= 9, 3)"),
        (lambda: kernels.rope(torch.randn(1, 4, 2, 5), torch.randn(1, 4, 2, 5), *rope_tables(6, 8, 1e4)), "even"),
        (lambda: kernels.rope(torch.randn(4, 2, 6), torch.randn(4, 2, 6), *rope_tables(6, 8, 1e4)), "(batch, seq"),
        (
            lambda: kernels.fused_linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 9), torch.zeros(4).long()),
            "must be (vocab, dim)",
        ),
        (
            lambda: kernels.fused_linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(5).long()),
            "target (5,) must have hidden's leading shape (4,)",
        ),
        (
            lambda: kernels.fused_linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.full((4,), 10)),
            "targets must lie in [0, 10)",
        ),
        (
            lambda: kernels.fused_linear_cross_entropy(torch.randn(2, 8), torch.randn(10, 8), torch.zeros(2)),
            "target must be int64 or int32",
        ),
        (
            lambda: kernels.fused_linear_cross_entropy(
                torch.randn(2, 8), torch.randn(3, 8), torch.zeros(2).long(), chunk_size=0
            ),
            "chunk_size must be a positive",
        ),
    ],
    ids=["norm-weight", "swiglu", "rope-seq", "rope-table", "rope-odd", "rope-rank", "flce-dim", "flce-target",
         "flce-range", "flce-target-dtype", "flce-chunk"],
)  # fmt: skip
def test_mismatched_shapes_refused(call, message: str) -> None:
    with pytest.raises(KernelInputError) as error:
        call()
    assert message in str(error.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.float8_e4m3fn])
def test_unsupported_dtypes_refused_with_choices(dtype: torch.dtype) -> None:
    x = torch.zeros(2, 4).to(dtype)
    for call in (lambda: kernels.rms_norm(x, torch.zeros(4).to(dtype)), lambda: kernels.swiglu(x, x)):
        with pytest.raises(KernelInputError, match="supported: float32, bfloat16, float16"):
            call()


def test_mixed_dtypes_refused() -> None:
    with pytest.raises(KernelInputError, match="use one dtype"):
        kernels.swiglu(torch.randn(3), torch.randn(3, dtype=torch.bfloat16))


def test_non_contiguous_inputs_are_made_contiguous() -> None:
    """Documented behaviour: a transposed or sliced input gives the same result as its copy."""
    x = torch.randn(12, 5).t()  # (5, 12), not contiguous
    w = torch.randn(12)
    assert not x.is_contiguous()
    (xk, wk), (xr, wr) = leaves(x, w), leaves(x, w)
    y = kernels.rms_norm(xk, wk)
    expected = reference.rms_norm(xr, wr)
    assert_close(y, expected, torch.float32, "strided rms_norm")
    y.sum().backward()
    expected.sum().backward()
    assert_close(xk.grad, xr.grad, torch.float32, "strided rms_norm dx")
    gate = torch.randn(6, 20)[:, ::2]
    assert_close(kernels.swiglu(gate, gate), reference.swiglu(gate, gate), torch.float32, "strided swiglu")
    q = torch.randn(1, 3, 6, 2).transpose(2, 3)  # (1, 3, 2, 6)
    cos, sin = rope_tables(6, 3, 1e4)
    assert_close(kernels.rope(q, q, cos, sin)[0], reference.rope_one(q, cos, sin), torch.float32, "strided rope")
    hidden = torch.randn(8, 3).t()  # (3, 8)
    weight = torch.randn(8, 5).t()  # (5, 8)
    target = torch.tensor([0, 4, 2])
    loss = kernels.fused_linear_cross_entropy(hidden, weight, target)
    assert abs(loss.item() - reference.linear_cross_entropy(hidden, weight, target).item()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_target_ignored_gives_zero_loss_and_gradients(dtype: torch.dtype) -> None:
    hidden = torch.randn(5, 8, dtype=dtype, requires_grad=True)
    weight = torch.randn(13, 8, dtype=dtype, requires_grad=True)
    target = torch.full((5,), -1)
    loss = kernels.fused_linear_cross_entropy(hidden, weight, target, ignore_index=-1, chunk_size=2)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(hidden.grad) == 0 and not hidden.grad.isnan().any()
    assert torch.count_nonzero(weight.grad) == 0 and not weight.grad.isnan().any()
