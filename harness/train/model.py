"""A Llama-style decoder in one readable file: RMSNorm, rotary embeddings, SwiGLU MLP,
grouped-query attention with causal `scaled_dot_product_attention`, optional tied embeddings.

The shapes follow `ModelShape` (configs/model/*.yaml). With `fused=True` the norms, SwiGLU,
rotary embedding and the output projection + loss run through the fused ops of `kernels`
(Triton on CUDA or under TRITON_INTERPRET=1, their PyTorch fallback elsewhere); the unfused
path is plain PyTorch and is the reference the fused model is tested against.

Made to be cut up by `harness.train.parallelize` (issue 13):
- heads are viewed as -1, so a tensor-parallel shard runs its local heads with the same code;
- layers are keyed by their global index ("0".."n-1"), and the embedding, the final norm and
  the output head may be absent (None), so a pipeline stage is this model with the other parts
  removed and every parameter keeps the name it has in the whole model (checkpoints reshard by
  name between layouts);
- a stage without the embedding takes hidden states instead of token ids, and a stage without
  the head returns hidden states;
- `init_weights` draws each weight from a generator keyed by (seed, parameter name), so every
  layout, stage and engine starts from the same weights, and a model built on the meta device
  is materialised stage by stage.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from harness.perf.shape import ModelShape
from harness.train import tensor_parallel as tp_ops
from harness.train.context_parallel import ContextParallel
from kernels import reference
from kernels.reference import rope_tables


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, fused: bool = False) -> None:
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            # Row-wise: under tensor parallelism the kernel runs on this rank's rows.
            return tp_ops.local_rowwise(lambda h, w: kernels.rms_norm(h, w.to(h.dtype), self.eps), x, self.weight)
        # Normalise in float32 whatever the activation dtype, as Llama does.
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.head_dim = shape.head_dim
        self.wq = nn.Linear(shape.dim, shape.n_heads * shape.head_dim, bias=False)
        self.wk = nn.Linear(shape.dim, shape.n_kv_heads * shape.head_dim, bias=False)
        self.wv = nn.Linear(shape.dim, shape.n_kv_heads * shape.head_dim, bias=False)
        self.wo = nn.Linear(shape.n_heads * shape.head_dim, shape.dim, bias=False)
        self.context_parallel: ContextParallel | None = None
        """Set by parallelize: this rank holds two chunks of the sequence (Llama 3's CP)."""

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        # -1 heads: the local heads of a tensor-parallel shard, or all of them.
        q = self.wq(x).view(b, s, -1, self.head_dim)
        k = self.wk(x).view(b, s, -1, self.head_dim)
        v = self.wv(x).view(b, s, -1, self.head_dim)
        cp = self.context_parallel
        if cp is not None:  # rotate by the global positions of this rank's two chunks
            positions = cp.positions(s, cos.device)
            cos, sin = cos[positions], sin[positions]
        q, k = kernels.rope(q, k, cos, sin) if self.fused else reference.rope(q, k, cos, sin)
        if cp is not None:
            out = cp.attention(q, k, v)
        else:
            if k.shape[2] != q.shape[2]:  # grouped-query attention: share each KV head
                repeat = q.shape[2] // k.shape[2]
                k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            ).transpose(1, 2)
        return self.wo(out.reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, shape: ModelShape, fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.w1 = nn.Linear(shape.dim, shape.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(shape.dim, shape.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(shape.ffn_dim, shape.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # element-wise: under tensor parallelism w1 and w3 give this rank's columns
            return self.w2(kernels.swiglu(self.w1(x), self.w3(x)))
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class OutputHead(nn.Linear):
    """The output projection; with targets, the mean cross-entropy. With `fused`, projection and
    cross-entropy in one op that never materialises the logits. Being the module that is called
    keeps ZeRO-3 and FSDP gathering its weight as for a plain Linear. Under tensor parallelism
    (a vocabulary-sharded weight) see `tensor_parallel.head_loss`."""

    def __init__(self, dim: int, vocab_size: int, fused: bool = False) -> None:
        super().__init__(dim, vocab_size, bias=False)
        self.fused = fused

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if tp_ops.is_sharded(self.weight):
            return tp_ops.head_loss(x, self.weight, targets, fused=self.fused)
        if targets is None:
            return super().forward(x)
        if self.fused:
            return kernels.fused_linear_cross_entropy(x, self.weight.to(x.dtype), targets)
        logits = super().forward(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


class Block(nn.Module):
    def __init__(self, shape: ModelShape, fused: bool = False) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(shape.dim, shape.norm_eps, fused)
        self.attention = Attention(shape, fused)
        self.ffn_norm = RMSNorm(shape.dim, shape.norm_eps, fused)
        self.feed_forward = FeedForward(shape, fused)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class LayerStack(nn.ModuleDict):
    """Transformer blocks keyed by their global index ("0".."n-1"), so that a pipeline stage that
    holds layers 4..7 names their parameters as the whole model does. Iterating yields the blocks
    in order, as a ModuleList would."""

    def __iter__(self):  # type: ignore[override]
        return iter(self.values())


class Transformer(nn.Module):
    """Token ids (batch, seq) -> logits (batch, seq, vocab); with targets, the mean cross-entropy.
    `fused`: run the fused ops of `kernels` (model.fused_kernels). A pipeline stage is this model
    with `tok_embeddings`, some layers, `norm` and `output` removed (see the module docstring)."""

    def __init__(self, shape: ModelShape, *, activation_checkpointing: bool = False, fused: bool = False) -> None:
        super().__init__()
        self.shape = shape
        self.fused = fused
        self.activation_checkpointing = activation_checkpointing
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(shape.vocab_size, shape.dim)
        self.layers = LayerStack({str(i): Block(shape, fused) for i in range(shape.n_layers)})
        self.norm: RMSNorm | None = RMSNorm(shape.dim, shape.norm_eps, fused)
        self.output: OutputHead | None = OutputHead(shape.dim, shape.vocab_size, fused)
        if shape.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_rope()
        if not self.rope_cos.is_meta:
            self.reset_parameters()

    def init_rope(self) -> None:
        """(Re)compute the rotary tables (buffers are not saved, and are empty after to_empty)."""
        shape = self.shape
        cos, sin = rope_tables(shape.head_dim, shape.max_seq_len, shape.rope_theta)
        device = self.rope_cos.device
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights from the global generator, output projections scaled by
        1/sqrt(2·layers) (GPT-2). The trainer uses `init_weights` instead."""
        for name, param in self.named_parameters():
            if param.dim() == 2:
                nn.init.normal_(param, mean=0.0, std=_std(name, self.shape.n_layers))

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        for layer in self.layers:
            if self.activation_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                x = layer(x, self.rope_cos, self.rope_sin)
        if self.norm is None:  # a pipeline stage before the last: hidden states to the next one
            return x
        return self.output(self.norm(x), targets)


def _std(name: str, n_layers: int) -> float:
    return 0.02 / math.sqrt(2 * n_layers) if name.endswith(("wo.weight", "w2.weight")) else 0.02


def _generator(seed: int, name: str) -> torch.Generator:
    # crc32, not hash(): Python salts str hashes per process, and every rank must agree.
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


@torch.no_grad()
def init_weights(model: Transformer, seed: int) -> None:
    """Each 2-D weight from Normal(0, std) drawn by a generator keyed by (seed, its name); norms
    at 1. A weight gets the same values in the whole model and in any pipeline stage, on any
    engine, so losses do not depend on the layout. Tensor-parallel weights (DTensors) keep their
    slice of the whole values; call before FSDP shards them. Recomputes the rotary tables too."""
    for name, param in model.named_parameters():
        if param.dim() == 2:
            values = torch.randn(param.shape, generator=_generator(seed, name)) * _std(name, model.shape.n_layers)
            tp_ops.copy_global(param, values)
        else:
            param.fill_(1.0)
    model.init_rope()


def materialize(model: Transformer, device: torch.device, seed: int) -> Transformer:
    """A model (or stage, tensor-parallel or not) built on the meta device, allocated on `device`
    and initialised by `init_weights`; the tied output weight is tied again (to_empty allocates
    each anew)."""
    model.to_empty(device=device)
    if model.shape.tied_embeddings and model.tok_embeddings is not None and model.output is not None:
        model.output.weight = model.tok_embeddings.weight
    init_weights(model, seed)
    return model
