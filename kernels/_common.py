"""What every kernel file shares: whether Triton can run, input checks, and which path ran.

A kernel runs through Triton when its tensors are on a CUDA device, or anywhere when the Triton
interpreter is on (`TRITON_INTERPRET=1`, read by Triton at import, so it must be set before
`kernels` is first imported). Otherwise the op runs its plain PyTorch implementation, so a
model using these ops runs on every machine. `last_path(op)` says which path the last call took;
under `torch.compile`, the custom ops record it when they run (see `mark`).
"""

import functools
import os

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # a machine without Triton: the kernels are defined but never launched
    HAVE_TRITON = False

    class _NoTriton:
        constexpr = int

        @staticmethod
        def jit(fn=None, **_kwargs):
            return fn if fn is not None else (lambda f: f)

        @staticmethod
        def cdiv(a: int, b: int) -> int:
            return -(-a // b)

        @staticmethod
        def next_power_of_2(n: int) -> int:
            return 1 << max(0, (n - 1).bit_length())

    triton = tl = _NoTriton()  # type: ignore[assignment]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_LAST: dict[str, str] = {}


class KernelInputError(ValueError):
    """Inputs a fused op cannot take (shape, dtype, device); the message names the valid choices."""


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when these tensors would run through the Triton kernels."""
    return HAVE_TRITON and (INTERPRET or all(t.is_cuda for t in tensors))


def path_for(*tensors: torch.Tensor) -> str:
    """'triton' or 'torch': the path an op would take for these tensors."""
    return "triton" if use_triton(*tensors) else "torch"


def last_path(op: str) -> str | None:
    """'triton' or 'torch': the path the last call of `op` took (None before any call)."""
    return _LAST.get(op)


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will want gradients here; without, the ops launch their forward kernels
    directly and skip the autograd.Function's bookkeeping."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def mark(op: str, path: str) -> None:
    """Record the path a call of `op` takes. Skipped while dynamo traces: a write to a global
    inside an activation-checkpointed region stops a fullgraph compile ("HOP: unsafe side
    effect"). The custom ops call this when they run, so compiled calls on the Triton path (and
    every cross-entropy call) are recorded; a compiled call on the PyTorch path is not."""
    if not torch.compiler.is_compiling():
        _LAST[op] = path


def check_dtype(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in DTYPES:
        choices = ", ".join(str(d).removeprefix("torch.") for d in DTYPES)
        raise KernelInputError(f"{op}: {name} has dtype {str(t.dtype).removeprefix('torch.')}; supported: {choices}")


def check_same(op: str, **tensors: torch.Tensor) -> None:
    """Same device and dtype for every named tensor."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise KernelInputError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}")
        if t.dtype != first.dtype:
            raise KernelInputError(f"{op}: {name} is {t.dtype} but {first_name} is {first.dtype}; use one dtype")


def num_warps(block: int) -> int:
    """Warps for a row of `block` elements (more warps for long rows, as the Triton tutorials do)."""
    return 16 if block >= 16384 else 8 if block >= 2048 else 4


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def programs(device: torch.device, rows: int) -> int:
    """Programs for a loop over rows: two per SM on a GPU (each keeps a partial sum), a few in
    the interpreter (which runs programs one after another)."""
    if device.type == "cuda":
        return max(1, min(rows, 2 * _sm_count(device.index if device.index is not None else 0)))
    return max(1, min(rows, 4))
