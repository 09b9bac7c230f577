"""What a training step processes: the train.* keys the cost model needs, as one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ConfigError
from harness.perf.device import canonical_dtype


@dataclass(frozen=True)
class Workload:
    """One training step's shape (config section `train`)."""

    seq_len: int
    """Tokens per sequence."""
    global_batch: int
    """Sequences per optimizer step, all data-parallel ranks together."""
    micro_batch: int = 1
    """Sequences per micro-batch on one data-parallel rank."""
    dtype: str = "bfloat16"
    """bfloat16, float16, float32, or float8 (fp8 linear layers, the rest bf16)."""
    activation_checkpointing: bool = False
    """Full recompute: keep each layer's input, run the forward again in the backward."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "global_batch", "micro_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"train.{name}={value!r}: must be a whole number ≥ 1")
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def activation_bytes(self) -> int:
        """Bytes per activation element: 4 in fp32 training, 2 otherwise (fp8 keeps bf16 activations)."""
        return 4 if self.dtype == "float32" else 2
