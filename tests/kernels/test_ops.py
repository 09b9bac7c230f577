"""Forward and every gradient of each fused op against its reference, normal and odd shapes."""

from __future__ import annotations

import pytest
import torch

import kernels
from harness.train.model import ModelShape, Transformer, rope_tables
from kernels import reference
from tests.kernels.conftest import assert_close, leaves

DTYPES = [torch.float32, torch.bfloat16]


def check_op(op: str, inputs: tuple[torch.Tensor, ...], grad_names: tuple[str, ...], dtype: torch.dtype, *args) -> None:
    """kernels.<op> against reference.<op> on copies of `inputs`: every output, then every
    input's gradient for one random upstream gradient per output."""
    fused_in, ref_in = leaves(*inputs), leaves(*inputs)
    fused, expected = getattr(kernels, op)(*fused_in, *args), getattr(reference, op)(*ref_in, *args)
    assert kernels.last_path(op) == "triton"
    fused, expected = (
        (fused,) if torch.is_tensor(fused) else fused,
        (expected,) if torch.is_tensor(expected) else expected,
    )
    for i, (out, ref) in enumerate(zip(fused, expected, strict=True)):
        assert_close(out, ref, dtype, f"{op} output {i}")
    upstream = [torch.randn_like(ref) for ref in expected]
    torch.autograd.backward(fused, upstream)
    torch.autograd.backward(expected, upstream)
    for name, got, want in zip(grad_names, fused_in, ref_in, strict=True):
        # dweight of rms_norm sums over every row: its rounding grows with the rows, as for any reduction.
        assert_close(got.grad, want.grad, dtype, f"{op} d{name}")


@pytest.mark.parametrize("dtype", [*DTYPES, torch.float16])
@pytest.mark.parametrize("shape", [(1, 37), (3, 5, 37), (6, 130), (2, 257)], ids=str)
def test_rms_norm(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = torch.randn(shape, dtype=dtype)
    w = (1 + 0.5 * torch.randn(shape[-1])).to(dtype)
    check_op("rms_norm", (x, w), ("x", "weight"), dtype, 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 33), (3, 1500)], ids=str)
def test_swiglu(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gate, up = torch.randn(shape, dtype=dtype) * 3, torch.randn(shape, dtype=dtype)
    check_op("swiglu", (gate, up), ("gate", "up"), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "q_shape,kv_heads",
    [((1, 1, 1, 2), 1), ((2, 5, 4, 6), 2), ((1, 7, 3, 10), 3), ((2, 9, 8, 16), 1)],
    ids=["single", "gqa", "odd-half", "mqa"],
)
def test_rope(q_shape: tuple[int, int, int, int], kv_heads: int, dtype: torch.dtype) -> None:
    b, s, _, d = q_shape
    q, k = torch.randn(q_shape, dtype=dtype), torch.randn(b, s, kv_heads, d, dtype=dtype)
    cos, sin = rope_tables(d, s + 3, 10000.0)  # longer tables than the sequence, as in the model
    check_op("rope", (q, k), ("q", "k"), dtype, cos, sin)


FLCE_CASES = {
    # (leading shape, dim, vocab, chunk_size)
    "chunked": ((2, 7), 24, 101, 5),
    "one-row": ((1,), 16, 37, None),
    "vocab-over-block": ((3,), 8, kernels.cross_entropy.BLOCK_V + 9, 2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FLCE_CASES, ids=list(FLCE_CASES))
def test_fused_linear_cross_entropy(case: str, dtype: torch.dtype) -> None:
    lead, dim, vocab, chunk = FLCE_CASES[case]
    hidden = torch.randn(*lead, dim, dtype=dtype)
    weight = (torch.randn(vocab, dim) / dim**0.5).to(dtype)
    target = torch.randint(0, vocab, lead)
    target.view(-1)[0] = -100  # one ignored position
    (hk, wk), (hr, wr) = leaves(hidden, weight), leaves(hidden, weight)
    loss = kernels.fused_linear_cross_entropy(hk, wk, target, chunk_size=chunk)
    assert kernels.last_path("fused_linear_cross_entropy") == "triton"
    expected = reference.linear_cross_entropy(hr.float(), wr.float(), target)
    assert loss.dtype == torch.float32 and loss.shape == ()
    # The logits are formed in the input dtype, so bf16 carries their rounding into the loss.
    assert abs(loss.item() - expected.item()) <= (1e-5 if dtype == torch.float32 else 2e-2) * abs(expected.item())
    loss.backward()
    expected.backward()
    assert_close(hk.grad, hr.grad.to(dtype), dtype, "flce dhidden")
    assert_close(wk.grad, wr.grad.to(dtype), dtype, "flce dweight")


def test_cross_entropy_under_autocast() -> None:
    """Under autocast (the DDP engine's bf16/fp16) the projection runs in the autocast dtype, as
    a Linear's would, and the gradients reach the float32 leaves."""
    hidden, weight = torch.randn(6, 16), torch.randn(37, 16) / 4
    target = torch.randint(0, 37, (6,))
    (hk, wk), (hr, wr) = leaves(hidden, weight), leaves(hidden, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = kernels.fused_linear_cross_entropy(hk, wk, target)
        expected = reference.linear_cross_entropy(hr, wr, target)
    assert kernels.last_path("fused_linear_cross_entropy") == "triton"
    assert abs(loss.item() - expected.item()) <= 2e-2 * abs(expected.item())
    loss.backward()
    expected.backward()
    assert_close(hk.grad, hr.grad, torch.bfloat16, "autocast dhidden")
    assert_close(wk.grad, wr.grad, torch.bfloat16, "autocast dweight")


def test_fused_model_under_autocast_matches_the_unfused() -> None:
    shape = ModelShape(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, max_seq_len=16)
    tokens = torch.randint(0, 97, (2, 9))
    losses = []
    for fused in (False, True):
        torch.manual_seed(7)
        model = Transformer(shape, fused=fused)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)


def test_loss_scaled_by_upstream_gradient() -> None:
    hidden, weight = torch.randn(4, 8), torch.randn(11, 8)
    target = torch.randint(0, 11, (4,))
    (hk, wk), (hr, wr) = leaves(hidden, weight), leaves(hidden, weight)
    (kernels.fused_linear_cross_entropy(hk, wk, target) * 0.25).backward()
    (reference.linear_cross_entropy(hr, wr, target) * 0.25).backward()
    assert_close(hk.grad, hr.grad, torch.float32, "scaled dhidden")
    assert_close(wk.grad, wr.grad, torch.float32, "scaled dweight")


def test_fallback_path_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off CUDA and without the interpreter every op runs its PyTorch path and says so; the
    chunked cross-entropy fallback matches the reference too."""
    monkeypatch.setattr(kernels._common, "INTERPRET", False)
    x, w = torch.randn(3, 10), torch.ones(10)
    assert kernels.path_for(x) == "torch"
    assert torch.equal(kernels.rms_norm(x, w), reference.rms_norm(x, w))
    assert kernels.last_path("rms_norm") == "torch"
    kernels.swiglu(x, x)
    assert kernels.last_path("swiglu") == "torch"
    cos, sin = rope_tables(4, 2, 10000.0)
    kernels.rope(torch.randn(1, 2, 2, 4), torch.randn(1, 2, 1, 4), cos, sin)
    assert kernels.last_path("rope") == "torch"
    hidden, weight = torch.randn(9, 6), torch.randn(23, 6)
    target = torch.randint(0, 23, (9,))
    target[4] = -100
    (hk, wk), (hr, wr) = leaves(hidden, weight), leaves(hidden, weight)
    loss = kernels.fused_linear_cross_entropy(hk, wk, target, chunk_size=4)
    assert kernels.last_path("fused_linear_cross_entropy") == "torch"
    expected = reference.linear_cross_entropy(hr, wr, target)
    assert abs(loss.item() - expected.item()) < 1e-5
    loss.backward()
    expected.backward()
    assert_close(hk.grad, hr.grad, torch.float32, "fallback dhidden")
    assert_close(wk.grad, wr.grad, torch.float32, "fallback dweight")


def test_default_chunk_keeps_logits_near_hidden_size() -> None:
    # 4096 tokens, h 4096, a 128k vocabulary: 32x more logits per row than hidden values.
    chunk = kernels.cross_entropy.default_chunk_size(4096, 4096, 128256)
    assert chunk == 1024  # at least MIN_CHUNK rows: each chunk reads the whole weight
    assert kernels.cross_entropy.default_chunk_size(3, 4096, 100) == 4
    assert kernels.cross_entropy.default_chunk_size(65536, 4096, 128256) == 2048


def test_without_gradients_the_forward_needs_no_autograd() -> None:
    """Inference (no tensor needs a gradient) takes the direct launch, with the same results."""
    x, w = torch.randn(5, 40), torch.randn(40)
    gate, up = torch.randn(3, 50), torch.randn(3, 50)
    q, k = torch.randn(1, 6, 4, 8), torch.randn(1, 6, 2, 8)
    cos, sin = rope_tables(8, 6, 10000.0)
    with torch.no_grad():
        y = kernels.rms_norm(x.requires_grad_(), w)
        assert y.grad_fn is None and kernels.last_path("rms_norm") == "triton"
        assert_close(y, reference.rms_norm(x, w), torch.float32, "no-grad rms_norm")
        assert_close(kernels.swiglu(gate, up), reference.swiglu(gate, up), torch.float32, "no-grad swiglu")
        for got, want in zip(kernels.rope(q, k, cos, sin), reference.rope(q, k, cos, sin), strict=True):
            assert_close(got, want, torch.float32, "no-grad rope")
