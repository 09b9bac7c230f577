"""Training data: seeded synthetic tokens, or a memory-mapped flat file of token ids (uint16 or
uint32, the format nanoGPT and Megatron use).

Every batch is a pure function of (seed, step, micro-batch, data-parallel rank): a resumed run
sees exactly the batches it would have seen, whatever happened before, and no sampler state needs
saving. `python -m harness.train.tokenize in.txt out.u16` makes a token file from text with the
byte-level tokenizer (token = byte value, vocabulary 256; nothing is downloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import ConfigError

TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def _generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    # A fixed mix of the four numbers (not Python's hash, which is salted per process).
    key = ((seed * 1_000_003 + step) * 1_000_033 + micro) * 1_000_037 + rank
    return torch.Generator().manual_seed(key % (2**63 - 1))


@dataclass(frozen=True)
class BatchSpec:
    micro_batch: int
    seq_len: int
    vocab_size: int
    seed: int


class SyntheticData:
    """Uniform random tokens."""

    def __init__(self, spec: BatchSpec) -> None:
        self.spec = spec

    def batch(self, step: int, micro: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.spec
        tokens = torch.randint(
            0, s.vocab_size, (s.micro_batch, s.seq_len + 1), generator=_generator(s.seed, step, micro, rank)
        )
        return tokens[:, :-1], tokens[:, 1:]


class TokenFileData:
    """Windows of seq_len + 1 tokens at seeded random offsets of a flat token file."""

    def __init__(self, spec: BatchSpec, path: str, dtype: str) -> None:
        self.spec = spec
        self.tokens = open_token_file(path, dtype, spec.vocab_size, spec.seq_len)

    def batch(self, step: int, micro: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.spec
        starts = torch.randint(
            0, len(self.tokens) - s.seq_len, (s.micro_batch,), generator=_generator(s.seed, step, micro, rank)
        )
        rows = np.stack([self.tokens[i : i + s.seq_len + 1].astype(np.int64) for i in starts.tolist()])
        tokens = torch.from_numpy(rows)
        return tokens[:, :-1], tokens[:, 1:]


def open_token_file(path: str, dtype: str, vocab_size: int, seq_len: int) -> np.ndarray:
    """The file as a read-only memory map, checked: present, long enough, ids < vocabulary."""
    if dtype not in TOKEN_DTYPES:
        raise ConfigError(f"data.dtype={dtype!r}; choices: {', '.join(TOKEN_DTYPES)}")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"data.path={path!r}: no such file (make one with python -m harness.train.tokenize)")
    size = np.dtype(TOKEN_DTYPES[dtype]).itemsize
    if file.stat().st_size % size:
        raise ConfigError(f"data.path={path!r}: {file.stat().st_size} bytes is not a whole number of {dtype} ids")
    if file.stat().st_size < (seq_len + 1) * size:
        raise ConfigError(f"data.path={path!r} holds fewer than seq_len + 1 = {seq_len + 1} tokens")
    tokens = np.memmap(file, dtype=TOKEN_DTYPES[dtype], mode="r")
    largest = int(tokens.max())
    if largest >= vocab_size:
        raise ConfigError(f"data.path={path!r} holds token id {largest}, not below the model's vocab_size {vocab_size}")
    return tokens


def tokenize_bytes(text_path: str, out_path: str, dtype: str = "uint16") -> int:
    """Write the bytes of a text file as token ids; returns the number of tokens."""
    data = np.frombuffer(Path(text_path).read_bytes(), dtype=np.uint8).astype(TOKEN_DTYPES[dtype])
    tmp = Path(out_path).with_suffix(".tmp")
    data.tofile(tmp)
    tmp.replace(out_path)
    return len(data)
