"""Fused Triton kernels for the training model: RMSNorm, SwiGLU, RoPE and fused linear
cross-entropy, each with forward and backward. Every op also runs on machines where Triton
cannot (plain PyTorch); `last_path(op)` / `path_for(*tensors)` say which path runs.

Set TRITON_INTERPRET=1 before importing this package to run the Triton kernels on CPU (tests).
This package imports nothing from `harness`.
"""

from kernels._common import HAVE_TRITON, INTERPRET, KernelInputError, last_path, path_for, use_triton
from kernels.cross_entropy import fused_linear_cross_entropy
from kernels.rms_norm import rms_norm
from kernels.rope import rope
from kernels.swiglu import swiglu

OPS = ("rms_norm", "swiglu", "rope", "fused_linear_cross_entropy")

__all__ = [
    "HAVE_TRITON",
    "INTERPRET",
    "OPS",
    "KernelInputError",
    "fused_linear_cross_entropy",
    "last_path",
    "path_for",
    "rms_norm",
    "rope",
    "swiglu",
    "use_triton",
]
