"""Fused Triton kernels for the training model: RMSNorm, SwiGLU, RoPE and fused linear
cross-entropy, each with forward and backward. Every op also runs on machines where Triton
cannot (plain PyTorch); `last_path(op)` / `path_for(*tensors)` say which path runs.

Each op's Triton path (and the cross-entropy's PyTorch path) is also a pair of torch custom
ops, `exaharness::<op>_fwd` and `exaharness::<op>_bwd` (torch.library, with fake kernels and
autograd registered), so that `torch.compile(fullgraph=True)` of a model using these functions
has no graph break, with or without activation checkpointing. The public functions check their
inputs, then call the op when dynamo traces them; eager calls of rms_norm, swiglu and rope
launch through a plain autograd.Function instead (the op's dispatch about doubled their host
time), the cross-entropy always through its op. Under compile the checks run while dynamo
traces (a bad input fails the trace), and `last_path` is recorded by the ops when they run (not
by a compiled call on the PyTorch path, which has no op). The cross-entropy's target range needs
the target's values and is checked inside its op, when it runs.

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
