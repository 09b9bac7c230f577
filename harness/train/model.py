"""A Llama-style decoder in one readable file: RMSNorm, rotary embeddings, SwiGLU MLP,
grouped-query attention with causal `scaled_dot_product_attention`, optional tied embeddings.

The shapes follow `ModelShape` (configs/model/*.yaml). With `fused=True` the norms, SwiGLU,
rotary embedding and the output projection + loss run through the fused ops of `kernels`
(Triton on CUDA or under TRITON_INTERPRET=1, their PyTorch fallback elsewhere); the unfused
path is plain PyTorch and is the reference the fused model is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from harness.perf.shape import ModelShape
from kernels import reference
from kernels.reference import rope_tables


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, fused: bool = False) -> None:
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return kernels.rms_norm(x, self.weight.to(x.dtype), self.eps)
        # Normalise in float32 whatever the activation dtype, as Llama does.
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.n_heads, self.n_kv_heads, self.head_dim = shape.n_heads, shape.n_kv_heads, shape.head_dim
        self.wq = nn.Linear(shape.dim, shape.n_heads * shape.head_dim, bias=False)
        self.wk = nn.Linear(shape.dim, shape.n_kv_heads * shape.head_dim, bias=False)
        self.wv = nn.Linear(shape.dim, shape.n_kv_heads * shape.head_dim, bias=False)
        self.wo = nn.Linear(shape.n_heads * shape.head_dim, shape.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, s, self.n_kv_heads, self.head_dim)
        if self.fused:
            q, k = kernels.rope(q, k, cos, sin)
        else:
            q, k = reference.rope(q, k, cos, sin)
        v = self.wv(x).view(b, s, self.n_kv_heads, self.head_dim)
        if self.n_kv_heads != self.n_heads:  # grouped-query attention: share each KV head
            repeat = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, shape: ModelShape, fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.w1 = nn.Linear(shape.dim, shape.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(shape.dim, shape.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(shape.ffn_dim, shape.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.w2(kernels.swiglu(self.w1(x), self.w3(x)))
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class OutputHead(nn.Linear):
    """The output projection; with targets and `fused`, projection and cross-entropy in one op
    that never materialises the logits. Being the module that is called keeps ZeRO-3 and FSDP
    gathering its weight as for a plain Linear."""

    def __init__(self, dim: int, vocab_size: int, fused: bool = False) -> None:
        super().__init__(dim, vocab_size, bias=False)
        self.fused = fused

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
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


class Transformer(nn.Module):
    """Token ids (batch, seq) -> logits (batch, seq, vocab); with targets, the mean cross-entropy.
    `fused`: run the fused ops of `kernels` (model.fused_kernels)."""

    def __init__(self, shape: ModelShape, *, activation_checkpointing: bool = False, fused: bool = False) -> None:
        super().__init__()
        self.shape = shape
        self.fused = fused
        self.activation_checkpointing = activation_checkpointing
        self.tok_embeddings = nn.Embedding(shape.vocab_size, shape.dim)
        self.layers = nn.ModuleList(Block(shape, fused) for _ in range(shape.n_layers))
        self.norm = RMSNorm(shape.dim, shape.norm_eps, fused)
        self.output = OutputHead(shape.dim, shape.vocab_size, fused)
        if shape.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(shape.head_dim, shape.max_seq_len, shape.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights, output projections scaled by 1/sqrt(2·layers) (GPT-2)."""
        for name, param in self.named_parameters():
            if param.dim() == 2:
                std = 0.02 / math.sqrt(2 * self.shape.n_layers) if name.endswith(("wo.weight", "w2.weight")) else 0.02
                nn.init.normal_(param, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            if self.activation_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                x = layer(x, self.rope_cos, self.rope_sin)
        return self.output(self.norm(x), targets)
