"""Plain PyTorch definitions of the fused ops: what the kernels must compute.

The kernel tests compare against these, and `harness bench kernels` times them as the eager
(and, compiled, the `torch.compile`) baseline, so there is one definition of each op. They are
written for clarity, not memory: the cross-entropy reference materialises the full logits.
"""

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x², last dim) + eps) · weight, in float32, returned in x's dtype."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) · up, in float32, returned in gate's dtype."""
    return (F.silu(gate.float()) * up.float()).to(gate.dtype)


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (seq_len, head_dim / 2), float32 (Llama's frequencies)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def rope_one(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[..., 2i], x[..., 2i+1]) of x (batch, seq, heads, head_dim) by the
    angle of the position: cos and sin are (≥ seq, head_dim / 2) tables (Meta's Llama layout)."""
    seq = x.shape[1]
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    c, s = cos[None, :seq, None, :].float(), sin[None, :seq, None, :].float()
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).to(x.dtype)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary embedding applied to q and k (k may have fewer heads)."""
    return rope_one(q, cos, sin), rope_one(k, cos, sin)


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean cross-entropy of hidden @ weightᵀ over targets that are not ignore_index (0 when all are)."""
    logits = (hidden.reshape(-1, hidden.shape[-1]) @ weight.t()).float()
    target = target.reshape(-1)
    losses = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    return losses.sum() / (target != ignore_index).sum().clamp(min=1)
