"""Parameter counts, model FLOPs and the memory plan of a decoder, from its shape alone (no
weights are built, so a 405B plan can be checked on a laptop).

FLOPs per token (PaLM appendix B, nanoGPT, torchtitan): 6·(N − N_embedding) + 12·L·H·Q·T, with N
all parameters, N_embedding the token-embedding table, L layers, H heads, Q head dim, T sequence
length; the causal mask gets no discount (our default convention, see shared/REFERENCE.md §4).
With activation checkpointing the forward runs twice: hardware FLOPs 8·(N − N_emb) + 16·L·H·Q·T.

Memory per device (ZeRO paper, Rajbhandari et al. 2020), Ψ parameters, Nd data-parallel ranks,
AdamW: 16-bit training keeps 2Ψ weights, 2Ψ gradients and 12Ψ optimizer states (fp32 master
weights, momentum, variance); fp32 training 4Ψ + 4Ψ + 8Ψ. ZeRO-1 shards the optimizer states,
ZeRO-2 also the gradients, ZeRO-3 (and FSDP) also the weights. Activations, per layer and
micro-batch: 34·s·b·h bytes in 16-bit (Korthikanti et al. 2022, without the s² attention scores,
which SDPA does not keep), twice that in fp32; with checkpointing only each layer's input (2·s·b·h)
plus one layer's full set.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.train.model import ModelShape


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int
    """The token-embedding table (left out of the FLOP count, as PaLM does)."""


def param_count(shape: ModelShape) -> ParamCount:
    h, q = shape.dim, shape.head_dim
    attention = h * shape.n_heads * q * 2 + h * shape.n_kv_heads * q * 2  # wq, wo; wk, wv
    mlp = 3 * h * shape.ffn_dim
    layer = attention + mlp + 2 * h  # two RMSNorm weights
    embedding = shape.vocab_size * h
    output = 0 if shape.tied_embeddings else shape.vocab_size * h
    return ParamCount(embedding + shape.n_layers * layer + h + output, embedding)


def flops_per_token(shape: ModelShape, seq_len: int, *, recompute: bool = False) -> int:
    """Model FLOPs per token (training: forward and backward); `recompute` gives hardware FLOPs."""
    params = param_count(shape)
    dense = params.total - params.embedding
    attention = shape.n_layers * shape.n_heads * shape.head_dim * seq_len
    return (8 if recompute else 6) * dense + (16 if recompute else 12) * attention


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def memory_plan(
    shape: ModelShape, *, dtype: str, zero_stage: int, dp_size: int, micro_batch: int, seq_len: int,
    activation_checkpointing: bool = False,
) -> MemoryPlan:  # fmt: skip
    """The memory estimate per device for this ZeRO stage (FSDP: stage 3, DDP: stage 0)."""
    psi = param_count(shape).total
    half = dtype in ("bfloat16", "float16")
    weights, grads, optim = (2 * psi, 2 * psi, 12 * psi) if half else (4 * psi, 4 * psi, 8 * psi)
    if zero_stage >= 1:
        optim //= dp_size
    if zero_stage >= 2:
        grads //= dp_size
    if zero_stage >= 3:
        weights //= dp_size
    sbh = seq_len * micro_batch * shape.dim
    per_layer = 34 * sbh * (1 if half else 2)
    if activation_checkpointing:
        activations = shape.n_layers * 2 * sbh * (1 if half else 2) + per_layer
    else:
        activations = shape.n_layers * per_layer
    return MemoryPlan(weights, grads, optim, activations)
