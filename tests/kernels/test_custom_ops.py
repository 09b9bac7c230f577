"""The fused ops as torch custom ops (`exaharness::*`): `torch.compile(fullgraph=True)` of each op,
and of a small model using all four, with zero graph breaks and the eager results; and
`torch.library.opcheck` on every forward and backward op (schema, fake tensors, autograd).

Compiled on CPU with inductor's C++ backend; the ops run their Triton kernels through the
interpreter (tests/conftest.py). Small, odd shapes: each test takes a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

import kernels
from kernels import KernelInputError, reference
from kernels.reference import rope_tables
from tests.kernels.conftest import assert_close, leaves

OPS = {
    # Every op of the namespace: forward ops with autograd, and the backward ops they call.
    "rms_norm_fwd",
    "rms_norm_bwd",
    "swiglu_fwd",
    "swiglu_bwd",
    "rope_fwd",
    "rope_bwd",
    "fused_linear_cross_entropy_fwd",
    "fused_linear_cross_entropy_bwd",
}


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()  # no cached graphs or recompile counts from an earlier test


def graph_breaks(fn: Callable, *args: torch.Tensor) -> int:
    explanation = torch._dynamo.explain(fn)(*args)
    assert explanation.graph_count >= 1
    assert not explanation.break_reasons, explanation.break_reasons
    return explanation.graph_break_count


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    return (out,) if torch.is_tensor(out) else tuple(out)


def check_compiled(
    op: str, fn: Callable, reference_fn: Callable, inputs: tuple[torch.Tensor, ...], *, n_grad: int = 2
) -> None:
    """fn compiled with fullgraph=True against fn eager and the reference: no graph break, the
    Triton path taken, every output and the gradients of the first n_grad inputs (float32
    tolerance)."""
    assert graph_breaks(fn, *inputs) == 0
    compiled = torch.compile(fn, fullgraph=True)
    results = []
    for run in (compiled, fn, reference_fn):
        copies = (*leaves(*inputs[:n_grad]), *inputs[n_grad:])
        kernels._common._LAST.pop(op, None)  # set again by the call, compiled or not
        outputs = as_tuple(run(*copies))
        if run is not reference_fn:
            assert kernels.last_path(op) == "triton"  # the bookkeeping runs under compile too
        torch.manual_seed(0)  # the same upstream gradients for each run; 1 for a loss
        torch.autograd.backward(outputs, [torch.randn_like(out) if out.dim() else torch.ones(()) for out in outputs])
        results.append([*outputs, *(t.grad for t in copies[:n_grad])])
    got, eager, expected = results
    for i, (a, b, c) in enumerate(zip(got, eager, expected, strict=True)):
        assert_close(a, b, torch.float32, f"{op} tensor {i}: compiled vs eager")
        assert_close(a, c.detach(), torch.float32, f"{op} tensor {i}: compiled vs reference")


def test_rms_norm_compiles_without_graph_break() -> None:
    x, weight = torch.randn(3, 5, 37), 1 + 0.5 * torch.randn(37)
    check_compiled(
        "rms_norm", lambda x, w: kernels.rms_norm(x, w, 1e-5), lambda x, w: reference.rms_norm(x, w, 1e-5), (x, weight)
    )


def test_swiglu_compiles_without_graph_break() -> None:
    gate, up = torch.randn(7, 33) * 3, torch.randn(7, 33)
    check_compiled("swiglu", kernels.swiglu, reference.swiglu, (gate, up))


def test_rope_compiles_without_graph_break() -> None:
    q, k = torch.randn(2, 5, 3, 10), torch.randn(2, 5, 1, 10)
    cos, sin = rope_tables(10, 8, 1e4)
    check_compiled("rope", kernels.rope, reference.rope, (q, k, cos, sin))


@pytest.mark.parametrize("scale", [1.0, 0.25], ids=["loss", "scaled-loss"])
def test_fused_linear_cross_entropy_compiles_without_graph_break(scale: float) -> None:
    """The target-range check and the count of valid targets run inside the op, so the host sync
    they need is no graph break; a scaled loss scales the gradients in place in the compiled
    backward."""
    hidden, weight = torch.randn(2, 7, 24), torch.randn(101, 24) / 5
    target = torch.randint(0, 101, (2, 7))
    target[0, 0] = -100
    check_compiled(
        "fused_linear_cross_entropy",
        lambda h, w: kernels.fused_linear_cross_entropy(h, w, target, chunk_size=5) * scale,
        lambda h, w: reference.linear_cross_entropy(h, w, target) * scale,
        (hidden, weight),
    )


def test_every_target_ignored_compiles_to_zero_loss() -> None:
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(13, 8, requires_grad=True)
    target = torch.full((5,), -1)
    fn = torch.compile(lambda h, w, t: kernels.fused_linear_cross_entropy(h, w, t, ignore_index=-1), fullgraph=True)
    loss = fn(hidden, weight, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(hidden.grad) == 0 and torch.count_nonzero(weight.grad) == 0


def test_target_out_of_range_refused_under_compile() -> None:
    """The range needs the target's values: the op checks it when it runs, compiled or not."""
    fn = torch.compile(kernels.fused_linear_cross_entropy, fullgraph=True)
    with pytest.raises(KernelInputError, match=r"targets must lie in \[0, 10\)"):
        fn(torch.randn(4, 8), torch.randn(10, 8), torch.tensor([0, 3, 10, 1]))


def test_bad_shape_refused_while_tracing() -> None:
    """Shape, dtype and device checks run while dynamo traces: without fullgraph the frame falls
    back to eager and raises the KernelInputError; with fullgraph dynamo reports it (its message
    names the KernelInputError's)."""
    x, weight = torch.randn(3, 8), torch.ones(7)
    with pytest.raises(KernelInputError, match=r"weight \(7,\) must be \(hidden,\)"):
        torch.compile(kernels.rms_norm)(x, weight)
    with pytest.raises(Exception, match=r"weight \(7,\) must be \(hidden,\)"):
        torch.compile(kernels.rms_norm, fullgraph=True)(x, weight)


def test_compiled_without_gradients() -> None:
    """Inference under compile calls the ops (the eager no-grad launch is not traced), with the
    reference's results and no autograd graph."""
    x, weight, up = torch.randn(5, 40, requires_grad=True), torch.randn(40), torch.randn(5, 40)

    def fn(x, weight, up):
        return kernels.swiglu(kernels.rms_norm(x, weight), up)

    assert graph_breaks(torch.no_grad()(fn), x, weight, up) == 0
    with torch.no_grad():
        got = torch.compile(fn, fullgraph=True)(x, weight, up)
        expected = reference.swiglu(reference.rms_norm(x, weight), up)
    assert got.grad_fn is None
    assert_close(got, expected, torch.float32, "no-grad compiled")


class TwoLayers(nn.Module):
    """Two pre-norm blocks, each: RMSNorm → q/k projections rotated by RoPE (mixed back into the
    residual); RMSNorm → one linear to gate and up → SwiGLU → linear; then a final RMSNorm and
    the fused cross-entropy against the output weight. checkpoint: recompute each block in
    backward (torch.utils.checkpoint), as activation checkpointing does."""

    def __init__(self, dim: int = 18, heads: int = 3, kv_heads: int = 1, ffn: int = 22, vocab: int = 37,
                 checkpoint: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.checkpoint = checkpoint
        self.layers = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.attn_norm, block.ffn_norm = nn.Parameter(1 + 0.1 * torch.randn(dim)), nn.Parameter(torch.ones(dim))
            block.qk = nn.Linear(dim, (heads + kv_heads) * self.head_dim, bias=False)
            block.mix = nn.Linear((heads + kv_heads) * self.head_dim, dim, bias=False)
            block.gate_up = nn.Linear(dim, 2 * ffn, bias=False)
            block.down = nn.Linear(ffn, dim, bias=False)
            self.layers.append(block)
        self.norm = nn.Parameter(torch.ones(dim))
        self.output = nn.Parameter(torch.randn(vocab, dim) / dim**0.5)
        cos, sin = rope_tables(self.head_dim, 16, 1e4)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        qk = block.qk(kernels.rms_norm(x, block.attn_norm)).view(batch, seq, -1, self.head_dim)
        q, k = kernels.rope(qk[:, :, : self.heads], qk[:, :, self.heads :], self.cos, self.sin)
        x = x + block.mix(torch.cat((q, k), dim=2).flatten(2))
        gate, up = block.gate_up(kernels.rms_norm(x, block.ffn_norm)).chunk(2, dim=-1)
        return x + block.down(kernels.swiglu(gate, up))

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            if self.checkpoint:
                x = torch.utils.checkpoint.checkpoint(self.block, block, x, use_reentrant=False)
            else:
                x = self.block(block, x)
        return kernels.fused_linear_cross_entropy(kernels.rms_norm(x, self.norm), self.output, target, chunk_size=4)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["plain", "checkpointed"])
def test_two_layer_model_compiles_without_graph_break(checkpoint: bool) -> None:
    """Zero graph breaks, and eager's loss and gradients within 1e-4. Checkpointed: the blocks
    are recomputed in backward, as the training code will compile them (activation checkpointing
    first); dynamo then refuses any write to a global inside a block, such as `last_path`'s."""
    model = TwoLayers(checkpoint=checkpoint)
    x = torch.randn(2, 5, 18)
    target = torch.randint(0, 37, (2, 5))
    target[1, 4] = -100
    assert graph_breaks(model, x, target) == 0
    compiled = torch.compile(model, fullgraph=True)
    results = []
    for run in (model, compiled):
        model.zero_grad(set_to_none=True)
        loss = run(x, target)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (eager_loss, eager_grads), (loss, grads) = results
    assert abs(loss.item() - eager_loss.item()) <= 1e-4
    for (name, _), got, want in zip(model.named_parameters(), grads, eager_grads, strict=True):
        assert (got - want).abs().max().item() <= 1e-4, name


def test_pytorch_path_compiles_without_graph_break(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Triton does not run (here: the interpreter switched off), RMSNorm, SwiGLU and RoPE
    are plain PyTorch traced into the graph, and the cross-entropy's op runs its PyTorch step: no
    graph break, eager's loss and gradients. Through AOTAutograd without inductor's C++ build
    (about 30 s cold for this model's PyTorch ops here; it passes too)."""
    monkeypatch.setattr(kernels._common, "INTERPRET", False)
    model = TwoLayers()
    x, target = torch.randn(2, 5, 18), torch.randint(0, 37, (2, 5))
    assert graph_breaks(model, x, target) == 0
    results = []
    for run in (model, torch.compile(model, fullgraph=True, backend="aot_eager")):
        model.zero_grad(set_to_none=True)
        loss = run(x, target)
        loss.backward()
        results.append([loss.detach(), *(p.grad.clone() for p in model.parameters())])
        assert [kernels.last_path(op) for op in kernels.OPS] == ["torch"] * 4  # set by the eager run
    for i, (got, want) in enumerate(zip(results[1], results[0], strict=True)):
        assert_close(got, want, torch.float32, f"PyTorch path tensor {i}: compiled vs eager")


def test_two_layer_model_compiles_with_dynamic_shapes() -> None:
    """A new sequence length or batch reuses one dynamic graph (the fake kernels propagate
    symbolic shapes; the checks add no guard on a size) instead of recompiling per shape.
    Through AOTAutograd without inductor's C++ build (the test above builds it): a cold build of
    this model's graphs takes about 20 s here."""
    model = TwoLayers()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counter)
    compiles = []
    for batch, seq in ((2, 5), (3, 7)):
        x, target = torch.randn(batch, seq, 18), torch.randint(0, 37, (batch, seq))
        got, expected = compiled(x, target), model(x, target)
        assert abs(got.item() - expected.item()) <= 1e-4
        compiles.append(counter.frame_count)
    assert compiles[1] == compiles[0]  # the second shape compiled nothing


def test_two_layer_model_compiles_under_autocast() -> None:
    """As the DDP engine runs it: bfloat16 autocast around the compiled model (the cross-entropy
    casts under autocast and switches it off inside), no graph break, eager's loss and gradients.
    Through AOTAutograd without inductor's C++ build, as the test above."""
    model = TwoLayers()
    x, target = torch.randn(2, 5, 18), torch.randint(0, 37, (2, 5))

    def step(x, target):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x, target)

    assert graph_breaks(step, x, target) == 0
    results = []
    for run in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        model.zero_grad(set_to_none=True)
        loss = run(x, target)
        loss.backward()
        results.append([loss.detach(), *(p.grad.clone() for p in model.parameters())])
    for i, (got, want) in enumerate(zip(results[1], results[0], strict=True)):
        assert_close(got, want, torch.bfloat16, f"autocast tensor {i}: compiled vs eager")


def opcheck_samples() -> dict[str, tuple]:
    """One odd-shaped sample per op; float inputs require grad where autograd is registered."""
    x, weight = torch.randn(3, 5, 37, requires_grad=True), torch.randn(37, requires_grad=True)
    gate, up = torch.randn(7, 33, requires_grad=True), torch.randn(7, 33, requires_grad=True)
    q, k = torch.randn(2, 5, 3, 10, requires_grad=True), torch.randn(2, 5, 1, 10, requires_grad=True)
    cos, sin = rope_tables(10, 8, 1e4)
    hidden, out_weight = torch.randn(11, 24, requires_grad=True), torch.randn(101, 24, requires_grad=True)
    target = torch.randint(0, 101, (11,))
    target[3] = -100
    rstd = torch.rand(3, 5) + 0.5
    return {
        "rms_norm_fwd": (x, weight, 1e-5),
        "rms_norm_bwd": (torch.randn(3, 5, 37), x.detach(), weight.detach(), rstd),
        "swiglu_fwd": (gate, up),
        "swiglu_bwd": (torch.randn(7, 33), gate.detach(), up.detach()),
        "rope_fwd": (q, k, cos, sin),
        "rope_bwd": (torch.randn(2, 5, 3, 10), torch.randn(2, 5, 1, 10), cos, sin),
        "fused_linear_cross_entropy_fwd": (hidden, out_weight, target, -100, 4, True),
        "fused_linear_cross_entropy_bwd": (torch.tensor(0.5), torch.randn(11, 24), torch.randn(101, 24)),
    }


def test_every_op_is_registered() -> None:
    assert set(opcheck_samples()) == OPS
    for name in OPS:
        assert hasattr(torch.ops.exaharness, name), name


# opcheck's AOT test returns every output of the op from the traced function; the cross-entropy's
# backward scales two of them (the gradients it computed in forward) in place, which AOTAutograd
# refuses for a returned output. The public function drops them, and the compile tests above run
# it through AOTAutograd and inductor, scaled and unscaled.
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_SKIP = {"fused_linear_cross_entropy_fwd": {"test_aot_dispatch_dynamic"}}


@pytest.mark.parametrize("name", sorted(OPS))
def test_opcheck(name: str) -> None:
    """Schema (no undeclared mutation, no aliasing), fake tensors, autograd registration and
    AOT dispatch with dynamic shapes, as `torch.library.opcheck` tests them."""
    utils = [u for u in OPCHECK_UTILS if u not in OPCHECK_SKIP.get(name, ())]
    torch.library.opcheck(getattr(torch.ops.exaharness, name).default, opcheck_samples()[name], test_utils=utils)
