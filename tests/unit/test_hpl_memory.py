"""HPL's residual check on known systems, and the STREAM byte counts."""

from __future__ import annotations

import pytest
import torch

from harness.bench import hpl, memory


def test_exact_solution_passes() -> None:
    a = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    b = a @ x  # [6, 8]: x solves it exactly
    assert hpl.scaled_residual(a, x, b) == 0.0


def test_residual_by_hand() -> None:
    # x off by 1e-12 in its first entry: r = A dx = [4e-12, 2e-12], ||r||inf = 4e-12.
    # ||A||inf = 5, ||x||inf = 2, ||b||inf = 8, N = 2: scale = eps * (5*2 + 8) * 2 = 36 eps.
    a = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    x = torch.tensor([[1.0 + 1e-12], [2.0]], dtype=torch.float64)
    b = torch.tensor([[6.0], [8.0]], dtype=torch.float64)
    eps = torch.finfo(torch.float64).eps
    assert hpl.scaled_residual(a, x, b) == pytest.approx(4e-12 / (36 * eps), rel=1e-3)  # about 500: a failed solve
    assert hpl.scaled_residual(a, x, b) > hpl.THRESHOLD


def test_lu_solve_of_a_random_system_passes() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(300, 300, generator=gen, dtype=torch.float64) - 0.5
    b = torch.rand(300, 1, generator=gen, dtype=torch.float64) - 0.5
    assert hpl.scaled_residual(a, torch.linalg.solve(a, b), b) < 1.0  # HPL's passing runs sit far below 16
    # a solve in float32 is not an FP64 solve: it fails the check
    x32 = torch.linalg.solve(a.float(), b.float()).double()
    assert hpl.scaled_residual(a, x32, b) > hpl.THRESHOLD


def test_stream_byte_counts() -> None:
    assert {k: v[0] for k, v in memory.KERNELS.items()} == {"copy": 2, "scale": 2, "add": 3, "triad": 3}
    assert memory.KERNELS["triad"][1] == 2.0 + 3.0 * 4.0  # b + s*c with b=2, c=4, s=3
    assert memory.default_array_bytes("cuda") == 2**30
    assert memory.default_array_bytes("cpu") >= 4 * memory.last_level_cache_bytes()
