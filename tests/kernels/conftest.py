"""Kernel tests: every op against its PyTorch reference (kernels.reference) under the Triton
interpreter on CPU (set by tests/conftest.py), on small, odd shapes: the interpreter runs each
program in Python, so a 1024×1024 kernel already takes about a second."""

from __future__ import annotations

import pytest
import torch

import kernels

# Largest error accepted, relative to the largest magnitude of the reference, per dtype: a few
# float32 roundings; one or two bfloat16/float16 roundings of the output (8 and 11 bits).
TOLERANCE = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    scale = expected.float().abs().max().clamp(min=1e-6)
    error = ((actual.float() - expected.float()).abs().max() / scale).item()
    assert error <= TOLERANCE[dtype], f"{what}: relative error {error:.2e} > {TOLERANCE[dtype]:.0e} ({dtype})"


def leaves(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Independent copies that require grad (one set for the kernel, one for the reference)."""
    return tuple(t.detach().clone().requires_grad_(True) for t in tensors)


@pytest.fixture(autouse=True)
def _interpreter(request: pytest.FixtureRequest) -> None:
    if not kernels.HAVE_TRITON:
        pytest.fail("the kernel tests need Triton (pip install -e '.[dev]')")
    if request.node.get_closest_marker("gpu") is None and not kernels.INTERPRET:
        pytest.fail("the CPU kernel tests need TRITON_INTERPRET=1 set before `kernels` is imported")
    torch.manual_seed(1234)  # fresh random inputs per test, reproducible on failure
