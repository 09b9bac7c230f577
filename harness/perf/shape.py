"""A decoder's shape, its parameter count and its FLOPs per token, from the shape alone (no
weights are built, so a 405B plan can be checked on a laptop).

FLOPs per token (PaLM appendix B, nanoGPT, torchtitan): 6·(N − N_embedding) + 12·L·H·Q·T, with N
all parameters, N_embedding the token-embedding table, L layers, H heads, Q head dim, T sequence
length; the causal mask gets no discount (our default convention, see shared/REFERENCE.md §4).
With activation checkpointing the forward runs twice: hardware FLOPs 8·(N − N_emb) + 16·L·H·Q·T.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """The architecture of a decoder (configs/model/*.yaml)."""

    vocab_size: int
    dim: int
    """Hidden size h."""
    n_layers: int
    n_heads: int
    n_kv_heads: int
    """Key/value heads (grouped-query attention); equal to n_heads for multi-head attention."""
    ffn_dim: int
    """Hidden size of the SwiGLU MLP."""
    max_seq_len: int = 2048
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def shape_from_mapping(data: Mapping[str, Any]) -> ModelShape:
    """The shape from a model config (configs/model/*.yaml as a dict); other keys are ignored."""
    names = {f.name for f in dataclasses.fields(ModelShape)}
    return ModelShape(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int
    """The token-embedding table (left out of the FLOP count, as PaLM does)."""


def layer_params(shape: ModelShape) -> int:
    """Parameters of one transformer block: attention (wq, wk, wv, wo), SwiGLU MLP, two norms."""
    h, q = shape.dim, shape.head_dim
    attention = h * shape.n_heads * q * 2 + h * shape.n_kv_heads * q * 2  # wq, wo; wk, wv
    return attention + 3 * h * shape.ffn_dim + 2 * h


def param_count(shape: ModelShape) -> ParamCount:
    embedding = shape.vocab_size * shape.dim
    output = 0 if shape.tied_embeddings else shape.vocab_size * shape.dim
    return ParamCount(embedding + shape.n_layers * layer_params(shape) + shape.dim + output, embedding)


def flops_per_token(shape: ModelShape, seq_len: int, *, recompute: bool = False, causal: bool = False) -> int:
    """Model FLOPs per token (training: forward and backward); `recompute` gives hardware FLOPs.

    `causal=True` halves the attention term (6·L·H·Q·T), as current Megatron-LM counts: the mask
    leaves half of the score matrix to compute, and flash attention skips it. Our default is the
    PaLM/torchtitan convention without that discount (shared/REFERENCE.md §4)."""
    params = param_count(shape)
    dense = params.total - params.embedding
    attention = shape.n_layers * shape.n_heads * shape.head_dim * seq_len
    factor = (16 if recompute else 12) // (2 if causal else 1)
    return (8 if recompute else 6) * dense + factor * attention
