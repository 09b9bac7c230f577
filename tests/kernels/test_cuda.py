"""The kernels compiled for a real GPU (run with TRITON_INTERPRET=0 on a CUDA machine), in
bfloat16 at the sizes of llama3-8b and at odd sizes, against the float32 reference."""

from __future__ import annotations

import pytest
import torch

import kernels
from harness.train.model import rope_tables
from kernels import reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
BF16 = 3e-2  # relative to the largest magnitude: a couple of bfloat16 roundings


def check(fused_out, ref_out, fused_in, ref_in, what: str) -> None:
    fused_out, ref_out = list(fused_out), list(ref_out)
    grads = [torch.randn(r.shape, device="cuda") if r.dim() else torch.ones((), device="cuda") for r in ref_out]
    got = fused_out + list(torch.autograd.grad(fused_out, fused_in, [g.to(torch.bfloat16) for g in grads]))
    want = ref_out + list(torch.autograd.grad(ref_out, ref_in, grads))
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        error = ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6)).item()
        assert error < BF16, f"{what} tensor {i}: relative error {error:.2e}"


def pair(*shapes_and_scales):
    fused, ref = [], []
    for shape, scale in shapes_and_scales:
        t = torch.randn(shape, device="cuda") * scale
        fused.append(t.to(torch.bfloat16).requires_grad_())
        ref.append(t.to(torch.bfloat16).float().requires_grad_())
    return fused, ref


@pytest.mark.parametrize("rows,hidden", [(4096, 4096), (333, 5000), (1, 8192)])
def test_rms_norm_cuda(rows: int, hidden: int) -> None:
    (x, w), (xr, wr) = pair(((rows, hidden), 1.0), ((hidden,), 1.0))
    check([kernels.rms_norm(x, w)], [reference.rms_norm(xr, wr)], [x, w], [xr, wr], "rms_norm")
    assert kernels.last_path("rms_norm") == "triton"


@pytest.mark.parametrize("shape", [(4096, 14336), (77, 1001)])
def test_swiglu_cuda(shape: tuple[int, int]) -> None:
    (g, u), (gr, ur) = pair((shape, 2.0), (shape, 1.0))
    check([kernels.swiglu(g, u)], [reference.swiglu(gr, ur)], [g, u], [gr, ur], "swiglu")


@pytest.mark.parametrize("b,s,h,kv,d", [(1, 4096, 32, 8, 128), (2, 37, 6, 3, 10)])
def test_rope_cuda(b: int, s: int, h: int, kv: int, d: int) -> None:
    (q, k), (qr, kr) = pair(((b, s, h, d), 1.0), ((b, s, kv, d), 1.0))
    cos, sin = (t.cuda() for t in rope_tables(d, s, 500000.0))
    check(kernels.rope(q, k, cos, sin), reference.rope(qr, kr, cos, sin), [q, k], [qr, kr], "rope")


@pytest.mark.parametrize("tokens,dim,vocab", [(4096, 4096, 128256), (100, 64, 1000)])
def test_fused_linear_cross_entropy_cuda(tokens: int, dim: int, vocab: int) -> None:
    (h, w), (hr, wr) = pair(((tokens, dim), 1.0), ((vocab, dim), dim**-0.5))
    target = torch.randint(0, vocab, (tokens,), device="cuda")
    target[::7] = -100
    check([kernels.fused_linear_cross_entropy(h, w, target)], [reference.linear_cross_entropy(hr, wr, target)],
          [h, w], [hr, wr], "flce")  # fmt: skip


def test_fused_cross_entropy_peak_memory_is_a_fraction_of_unfused() -> None:
    """128k vocabulary, 8192 tokens, h 4096: the unfused logits alone are 2 GiB in bf16."""
    tokens, dim, vocab = 8192, 4096, 128256
    h = torch.randn(tokens, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(vocab, dim, device="cuda") * dim**-0.5).to(torch.bfloat16).requires_grad_()
    target = torch.randint(0, vocab, (tokens,), device="cuda")
    peaks = {}
    for name, fn in (("fused", kernels.fused_linear_cross_entropy), ("unfused", reference.linear_cross_entropy)):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(h, w, target).backward()
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() - base
        h.grad = w.grad = None
    fused, unfused = peaks["fused"] / 2**30, peaks["unfused"] / 2**30
    print(f"peak memory beyond inputs: fused {fused:.2f} GiB, unfused {unfused:.2f} GiB")
    assert peaks["fused"] < 0.5 * peaks["unfused"]
